"""The compact tables of trellis streams v10 and v11: exact integer values, rows that sum to
the precision, round trips, refusals, and smaller streams than v7's zstd tables."""

from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
import pytest

from quantcore.coding import compact_table, trellis_coder
from quantcore.coding.entropy import decode_codes
from quantcore.compress.trellis import trellis_levels
from quantcore.errors import InvalidPackageError


@pytest.mark.parametrize("steps", compact_table.STEPS)
def test_frequency_values_are_the_exact_floors_of_powers_of_two(steps: int) -> None:
    getcontext().prec = 60
    values = compact_table.frequency_values(steps, 16)
    expected = sorted({int((Decimal(2) ** (16 + Decimal(q) / steps)).to_integral_value(
        rounding="ROUND_FLOOR")) >> 16 for q in range(16 * steps)} - {0})  # fmt: skip
    np.testing.assert_array_equal(values, [v for v in expected if v < 1 << 16])
    assert values[0] == 1 and (np.diff(values) > 0).all()
    # Past the small integers, neighbouring values are a step of 2^(1/s) apart (floored).
    large = values[values > 4 * steps].astype(np.float64)
    assert (large[1:] / large[:-1] <= 2 ** (1 / steps) * (1 + 1 / large[:-1])).all()


def _counts(rng: np.random.Generator, symbols: np.ndarray, code_min: int, k: int) -> np.ndarray:
    """Laplacian-shaped counts for 2K contexts, each on its quantizer's levels."""
    sides = compact_table.allowed(symbols, code_min)
    levels = (symbols + code_min).astype(np.float64)
    counts = np.zeros((2 * k, symbols.size), np.int64)
    for row in range(2 * k):
        scale = 2.0 + row % k
        expected = 5000 * np.exp(-np.abs(levels) / scale) * sides[row // k]
        counts[row] = rng.poisson(expected)
    return counts


@pytest.mark.parametrize("precision", [8, 12, 16])
def test_rows_sum_to_the_precision_and_cost_near_their_entropy(precision: int) -> None:
    rng = np.random.default_rng(precision)
    symbols = np.arange(41, dtype=np.int64)
    counts = _counts(rng, symbols, -20, 8)
    freqs, entries, bits = compact_table.quantized(counts, precision, 8)
    assert (freqs.sum(axis=1) == 1 << precision).all()
    np.testing.assert_array_equal(freqs > 0, counts > 0)
    np.testing.assert_array_equal(entries > 0, counts > 0)
    p = counts / counts.sum(axis=1, keepdims=True)
    entropy = -float((counts[counts > 0] * np.log2(p[counts > 0])).sum())
    assert entropy <= bits <= entropy * (1.003 if precision >= 12 else 1.05)


@pytest.mark.parametrize("k", [1, 8])
def test_a_table_decodes_to_the_frequencies_it_was_given(k: int) -> None:
    rng = np.random.default_rng(k)
    code_min = -300  # levels past 255: 16-bit codes and wide coded values
    symbols = np.flatnonzero(rng.random(601) < 0.8).astype(np.int64)
    counts = _counts(rng, symbols, code_min, k)
    counts[3 % (2 * k)] = 0  # a context never met
    freqs, entries, _ = compact_table.quantized(counts, 14, 4)
    table = compact_table.encode(code_min, k, 4, symbols, entries)
    got = compact_table.decode(memoryview(table), symbols.size, 16, 14, 9)
    assert got[:2] == (code_min, k)
    np.testing.assert_array_equal(got[2], symbols)
    np.testing.assert_array_equal(got[3], freqs)


def _table(entries: list[int], steps: int = 4) -> bytes:
    """A table of one symbol row pair over levels 0..4 (code_min 0), K = 1, given the entries
    of its Q0 row (levels 0, 2, 4) and a Q1 row of zeros."""
    symbols = np.arange(5, dtype=np.int64)
    rows = np.zeros((2, 5), np.int64)
    rows[0, [0, 2, 4]] = entries
    return compact_table.encode(0, 1, steps, symbols, rows)


def test_corrupt_tables_are_refused() -> None:
    values = compact_table.frequency_values(4, 8)
    assert compact_table.decode(memoryview(_table([3, 9, 2])), 5, 8, 8, 9)[3][0].sum() == 256
    top = values.size  # the largest value's entry: two of them leave nothing for the rest
    with pytest.raises(InvalidPackageError, match="corrupt row"):
        compact_table.decode(memoryview(_table([top, top, top])), 5, 8, 8, 9)
    with pytest.raises(InvalidPackageError, match="corrupt row"):
        compact_table.decode(memoryview(_table([top + 1, 1, 1])), 5, 8, 8, 9)
    good = bytearray(_table([3, 9, 2]))
    for field, value in ((5, 0), (4, 10), (6, 4)):  # steps 0, K 10, an unknown flag
        bad = bytearray(good)
        bad[field] = value
        with pytest.raises(InvalidPackageError, match="trellis table has"):
            compact_table.decode(memoryview(bytes(bad)), 5, 8, 8, 9)
    with pytest.raises(InvalidPackageError, match="truncated"):
        compact_table.decode(memoryview(bytes(good[:8])), 5, 8, 8, 9)
    zero_flag_off = bytearray(good)
    zero_flag_off[6] &= ~2  # level 0 is a symbol: the flag says it is not
    with pytest.raises(InvalidPackageError, match="symbols are corrupt"):
        compact_table.decode(memoryview(bytes(zero_flag_off)), 5, 8, 8, 9)
    # Symbols past the codes' width: 300 to 304 for 8-bit codes.
    rows = np.zeros((2, 5), np.int64)
    rows[0, [0, 2, 4]] = (3, 9, 2)
    past = compact_table.encode(-300, 1, 4, np.arange(300, 305), rows)
    with pytest.raises(InvalidPackageError, match="symbols are corrupt"):
        compact_table.decode(memoryview(past), 5, 8, 8, 9)


def test_compact_streams_are_smaller_than_v7_and_decode() -> None:
    rng = np.random.default_rng(5)
    scale = np.repeat(rng.choice([0.3, 2.0], size=100), 500)  # magnitudes in runs: K = 8 pays
    w = (rng.laplace(size=scale.size) * scale).astype(np.float32)
    codes = (trellis_levels(w, 0.1, 120, 7).levels + 120).astype(np.uint8)  # 8 states: v7's
    compact = trellis_coder.encode(codes, -120, 1)
    zstd = trellis_coder.encode(codes, -120, 1, compact=False)
    assert compact is not None and zstd is not None
    assert compact[4] in trellis_coder.COMPACT and zstd[4] in (7, 8)
    assert len(compact) < len(zstd) - 300
    np.testing.assert_array_equal(decode_codes(compact), codes)
    np.testing.assert_array_equal(decode_codes(zstd), codes)
