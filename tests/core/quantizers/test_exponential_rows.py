"""The exponential design fitted to many samples at once, and its measured MSE, against the
one-sample design and ``quantize``'s measurement, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from quantcore.compress.thresholds import sample_mse
from quantcore.quantizers import exponential, exponential_rows, stream
from quantcore.quantizers.exponential_rows import LogSampleErrors, positive_levels
from quantcore.quantizers.measure import measurable, sample_errors
from quantcore.spec import Method, QuantizerSpec, Support


def samples(rows: int, n: int, seed: int = 3) -> np.ndarray:
    """Laplacian, Student-t and uniform rows at several scales, clipped and not, with a
    zero row, a constant row and a row of two values."""
    rng = np.random.default_rng(seed)
    x = rng.laplace(size=(rows, n)) * rng.uniform(0.05, 3.0, (rows, 1))
    x[1::4] = rng.standard_t(2, (x[1::4].shape[0], n))
    x[2::4] = rng.uniform(-0.4, 0.4, (x[2::4].shape[0], n))
    x[3] = 0.0
    x[4] = -0.3
    x[5, : n // 2], x[5, n // 2 :] = 1e-3, 0.7
    return x


def reference_levels(sample: np.ndarray, count: int) -> np.ndarray:
    return exponential._design_levels(np.abs(sample), count).levels


@pytest.mark.parametrize("count", [2, 4, 8, 64, 2048])
@pytest.mark.parametrize("n", [1, 7, 333, 4096])
def test_levels_equal_the_one_sample_design(count: int, n: int) -> None:
    x = samples(24, n)
    xmax = np.geomspace(0.01, 5.0, 24)  # from deep clipping to none
    pick = np.arange(24)[::-1]
    got = positive_levels(x, pick, xmax, count)
    want = np.array([reference_levels(x[p] / t, count) for p, t in zip(pick, xmax, strict=True)])
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
    assert np.unique(got[:, -1]).size > 10  # the samples gave different designs


def test_samples_whose_bins_do_not_ascend_are_designed_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sample whose bin centres step down goes to the reference design, and its batch's
    others are unaffected."""
    original = exponential_rows._bins

    def some_unordered(*args: np.ndarray) -> exponential_rows._Bins:
        bins = original(*args)
        ordered = bins.ordered.copy()
        ordered[::3] = False
        return dataclasses.replace(bins, ordered=ordered)

    x = samples(12, 500, seed=8)
    want = np.array([reference_levels(row, 8) for row in x])
    monkeypatch.setattr(exponential_rows, "_bins", some_unordered)
    got = positive_levels(x, np.arange(12), np.ones(12), 8)
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))


def test_bin_order_is_checked_within_each_sample() -> None:
    """Bins read from one sample to the next start low again: only a step down inside a
    sample counts."""
    x = np.array([[0.9, 0.5, 0.1], [0.3, 0.2, 0.01], [0.0, 0.0, 0.0], [1.0, 0.2, 0.6]])
    bins = exponential_rows._bins(x, np.arange(4), np.ones(4))
    assert bins.informed.tolist() == [True, True, False, True]
    assert bins.ordered.all()
    assert np.array_equal(np.diff(bins.offsets), [3, 3, 1, 3])  # zeros: bin 0


LOG_SPECS = [
    QuantizerSpec(method=Method.LOG, bits=2, support=Support.MSE),
    QuantizerSpec(method=Method.LOG, bits=4, support=Support.MSE),
    QuantizerSpec(method=Method.LOG, bits=8, support=Support.MSE),
    QuantizerSpec(method=Method.LOG, bits=12, support=Support.MSE),
]


@pytest.mark.parametrize("spec", LOG_SPECS, ids=lambda s: f"log{s.bits}")
def test_errors_equal_the_numpy_measurement(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec
) -> None:
    from tests.core.quantizers.test_measure import sample

    x = sample(6, 777)
    xmax = np.array([1e-3, 0.01, 0.3, 1.0, 2.0, 3.7, 8.0, 61.0, 400.0, 0.25, 0.5, 2.0, 32.0])
    pick = np.arange(xmax.size) % x.shape[0]
    assert measurable(spec)
    got = sample_errors(spec, x)(xmax, pick)
    monkeypatch.setattr(stream, "USE_KERNELS", False)
    want = np.array([sample_mse(spec, x[p], float(t)) for t, p in zip(xmax, pick, strict=True)])
    assert np.unique(want).size > 8
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))


def test_errors_measured_in_small_batches_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = QuantizerSpec(method=Method.LOG, bits=4, support=Support.MSE)
    x = samples(9, 300).astype(np.float32)
    xmax = np.linspace(0.2, 4.0, 27)
    pick = np.arange(27) % 9
    whole = LogSampleErrors(spec, x)(xmax, pick)
    monkeypatch.setattr(exponential_rows, "_BATCH_WEIGHTS", 700)  # two samples a batch
    monkeypatch.setattr(exponential_rows, "_HISTOGRAM_WEIGHTS", 400)
    assert LogSampleErrors(spec, x).batch == 2
    assert np.array_equal(LogSampleErrors(spec, x)(xmax, pick), whole)


def test_one_bit_keeps_the_row_by_row_search() -> None:
    assert not measurable(QuantizerSpec(method=Method.LOG, bits=1, support=Support.MSE))
    assert measurable(QuantizerSpec(method=Method.LOG, bits=2, support=Support.MSE))
