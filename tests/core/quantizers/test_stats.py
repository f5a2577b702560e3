"""Measurements: merged moments, SQNR edge cases, entropy from code counts, histograms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.errors import InvalidSpecError
from quantcore.quantizers.stats import (
    Histogram,
    Moments,
    chunk_moments,
    code_counts,
    code_entropy_bits,
    levels_used,
    sqnr_db,
)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5000), cuts=st.lists(st.integers(0, 5000), max_size=6),
    loc=st.floats(-1e3, 1e3), seed=st.integers(0, 2**31 - 1),
)
def test_merged_chunk_moments_equal_whole_array_moments(
    n: int, cuts: list[int], loc: float, seed: int
) -> None:
    x = np.random.default_rng(seed).normal(loc, 0.5, n)
    edges = sorted({0, n, *(c for c in cuts if c < n)})
    total = Moments()
    for lo, hi in itertools.pairwise(edges):
        total = total.merge(chunk_moments(x[lo:hi]))
    assert total.count == n
    assert total.mean == pytest.approx(x.mean(), rel=1e-12, abs=1e-12)
    assert total.variance == pytest.approx(x.var(), rel=1e-9, abs=1e-12)
    assert (total.minimum, total.maximum) == (x.min(), x.max())


def test_variance_survives_a_large_mean_in_float32() -> None:
    rng = np.random.default_rng(0)
    x = (1000.0 + rng.normal(0, 1e-2, 1 << 16)).astype(np.float32)
    m = chunk_moments(x)
    assert m.std == pytest.approx(float(np.std(x.astype(np.float64))), rel=1e-3)


def test_constant_chunk_has_exact_mean_and_zero_variance() -> None:
    m = chunk_moments(np.full(1000, 0.1, np.float32))
    assert m.mean == float(np.float32(0.1)) and m.m2 == 0.0


def test_sqnr() -> None:
    assert sqnr_db(1.0, 0.1) == pytest.approx(10.0)
    assert sqnr_db(1.0, 0.0) == math.inf
    assert sqnr_db(0.0, 0.0) == math.inf
    assert sqnr_db(0.0, 1.0) == -math.inf
    assert sqnr_db(1.0, math.inf) == -math.inf
    assert sqnr_db(math.inf, math.inf) == -math.inf


def test_entropy_and_levels_from_counts() -> None:
    codes = np.repeat(np.arange(-4, 4, dtype=np.int8), 100)
    counts = code_counts(codes)
    assert levels_used(counts) == 8
    assert code_entropy_bits(counts) == pytest.approx(3.0)
    skewed = code_counts(np.array([0, 0, 0, 1], np.uint8))
    assert code_entropy_bits(skewed) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * -2))
    assert code_entropy_bits(code_counts(np.zeros(5, np.int16))) == 0.0
    with pytest.raises(InvalidSpecError, match="int32"):
        code_counts(np.zeros(3, np.int32))


def test_histogram_counts_every_value_and_clamps_outliers() -> None:
    h = Histogram.empty(lo=-1.0, hi=1.0, bins=4)
    h = h.add(np.array([-5.0, -0.75, -0.1, 0.1, 0.9, 7.0]))
    assert h.counts.tolist() == [2, 1, 1, 2]
    np.testing.assert_allclose(h.edges, [-1, -0.5, 0, 0.5, 1])
    with pytest.raises(InvalidSpecError, match=r"lo=1\.0"):
        Histogram.empty(lo=1.0, hi=1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_values_are_counted_by_the_kernel_exactly_as_numpy_counts_them(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ``COMPILED_COUNT`` values (numba loaded), the compiled counter: the same counts,
    with values on the bins' edges, at both ends of the range and far outside it."""
    import quantcore.quantizers.histogram_kernel as kernel
    from quantcore.quantizers import stats

    rng = np.random.default_rng(4)
    values = (rng.laplace(size=stats.COMPILED_COUNT + 7) * 0.05).astype(dtype)
    lo, hi = float(values.min()), float(values.max())
    h = Histogram.empty(lo=lo, hi=hi, bins=101)
    values[:3] = [lo, hi, hi]
    values[3:104] = h.edges[:101]  # each edge, as the values' dtype rounds it
    values[104:110] = [-1e3, 1e3, lo - 1e-3, hi + 1e-3, 0.0, -0.0]
    calls: list[int] = []
    count = kernel.count_bins

    def counted(flat, *args):  # type: ignore[no-untyped-def]
        calls.append(flat.size)
        count(flat, *args)

    monkeypatch.setattr(kernel, "count_bins", counted)
    compiled = h.add(values.reshape(-1, 5)).add(values[:50])  # the small one: NumPy's way
    assert calls == [values.size]
    monkeypatch.setattr(stats, "COMPILED_COUNT", values.size + 1)
    assert compiled.counts.tolist() == h.add(values).add(values[:50]).counts.tolist()
    assert calls == [values.size]
    assert int(compiled.counts.sum()) == values.size + 50
