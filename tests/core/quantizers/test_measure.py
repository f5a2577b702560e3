"""``SampleErrors`` (compiled kernel, batched dot) against the NumPy measurement, bit for bit.

The reference is the one-channel search's own measurement: ``quantize`` on the NumPy path
(``stream.USE_KERNELS`` off), then ``np.dot`` of the float64 errors over the row's size.
"""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.compress.thresholds import sample_mse
from quantcore.quantizers import measure, stream
from quantcore.spec import Method, QuantizerSpec, Rounding, Support

SPECS = [
    QuantizerSpec(bits=1, support=Support.MSE),
    QuantizerSpec(bits=2, support=Support.MSE),
    QuantizerSpec(bits=4, support=Support.MSE),
    QuantizerSpec(bits=8, support=Support.MSE),
    QuantizerSpec(bits=3, rounding=Rounding.MIDTREAD, support=Support.MSE),
    QuantizerSpec(method=Method.DEADZONE, bits=4, support=Support.MSE),
    QuantizerSpec(method=Method.MULAW, bits=4, support=Support.MSE),
    QuantizerSpec(method=Method.MULAW, bits=8, support=Support.MSE),
    QuantizerSpec(method=Method.FLOAT, support=Support.MSE),  # keeps the sign of zero
    QuantizerSpec(method=Method.FLOAT, exponent_bits=2, mantissa_bits=1, support=Support.MSE),
]


def sample(rows: int, n: int) -> np.ndarray:
    """Laplacian rows with exact multiples of the steps below (ties at code edges), zeros,
    negative zeros and a far outlier per row."""
    rng = np.random.default_rng(11)
    x = rng.laplace(size=(rows, n)).astype(np.float32)
    x[:, :40] = np.arange(-20, 20, dtype=np.float32) * np.float32(0.25)
    x[:, 40] = -0.0
    x[:, 41] = 0.0
    x[:, 42] = 60.0
    x[1] = 0.0
    return x


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.method.value}{s.bits}-{s.rounding}")
def test_sample_errors_equal_the_numpy_measurement(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec
) -> None:
    x = sample(6, 777)
    # Thresholds from deep clipping to far beyond every weight, and ones whose step is 0.25.
    xmax = np.array([1e-3, 0.01, 0.3, 1.0, 2.0, 3.7, 8.0, 61.0, 400.0, 1e-30])
    xmax = np.concatenate([xmax, 0.25 * np.array([1.0, 2.0, 4.0, 8.0, 128.0])])
    pick = np.arange(xmax.size) % x.shape[0]
    got = measure.SampleErrors(spec, x)(xmax, pick)
    monkeypatch.setattr(stream, "USE_KERNELS", False)
    want = np.array([sample_mse(spec, x[p], float(t)) for t, p in zip(xmax, pick, strict=True)])
    assert np.unique(want).size > 8  # the thresholds measure differently
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_a_fitted_codebook_is_measured_as_encoding_with_it(
    monkeypatch: pytest.MonkeyPatch, bits: int
) -> None:
    """The exponential family's channels share one fitted codebook: each row's errors with
    it equal encoding that row with the same codebook."""
    from quantcore.quantizers import design

    spec = QuantizerSpec(method=Method.LOG, bits=bits, support=Support.MSE)
    x = sample(6, 777)
    fitted = design(spec, x.reshape(-1) / np.abs(x).max())
    xmax = np.array([1e-3, 0.3, 1.0, 2.0, 8.0, 61.0, 400.0])
    pick = np.arange(xmax.size) % x.shape[0]
    assert measure.measurable(spec, fitted)
    got = measure.sample_errors(spec, x, fitted)(xmax, pick)
    monkeypatch.setattr(stream, "USE_KERNELS", False)
    want = np.array([sample_mse(spec, x[p], float(t), fitted)
                     for t, p in zip(xmax, pick, strict=True)])  # fmt: skip
    assert np.unique(want).size > 4
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
