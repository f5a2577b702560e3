"""Minifloats: the cast is bit for bit ml_dtypes' (ties, subnormals, overflow, ±0), and the
quantizer emits bit patterns decoded through the format's own table."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from quantcore.quantizers import quantize, round_to_minifloat
from quantcore.quantizers.codes import decode
from quantcore.quantizers.minifloat import (
    Encoding,
    minifloat_format,
    minifloat_patterns,
    minifloat_values,
)
from quantcore.spec import Method, QuantizerSpec

FORMATS = [
    (5, 10, np.float16),
    (8, 7, ml_dtypes.bfloat16),
    (4, 3, ml_dtypes.float8_e4m3fn),
    (5, 2, ml_dtypes.float8_e5m2),
    (3, 4, ml_dtypes.float8_e3m4),
    (2, 3, ml_dtypes.float6_e2m3fn),
    (3, 2, ml_dtypes.float6_e3m2fn),
    (2, 1, ml_dtypes.float4_e2m1fn),
]
IDS = [t.__name__ for *_, t in FORMATS]


def _inputs(dtype: type, seed: int = 0) -> np.ndarray:
    """Random float32 around the format's range, its exact ties, subnormals, overflow, ±0."""
    fmt_max = float(ml_dtypes.finfo(dtype).max)
    tiny = float(ml_dtypes.finfo(dtype).smallest_subnormal)
    rng = np.random.default_rng(seed)
    # Random bit patterns of float32 restricted to exponents spanning the format and beyond.
    lo, hi = np.log2(tiny) - 3, min(np.log2(fmt_max) + 2, 127.0)
    magnitude = 2.0 ** rng.uniform(lo, hi, 200_000) * rng.uniform(1, 2, 200_000)
    sign = rng.choice([-1.0, 1.0], 200_000)
    values = (magnitude * sign).astype(np.float32)
    finite = np.arange(256 if np.dtype(dtype).itemsize == 1 else 65536, dtype=np.uint32)
    table = finite.astype(np.uint8 if np.dtype(dtype).itemsize == 1 else np.uint16)
    with np.errstate(invalid="ignore"):
        grid = table.view(dtype).astype(np.float64)
    grid = np.unique(grid[np.isfinite(grid)])
    ties = (grid[1:] + grid[:-1]) / 2  # exact midpoints: M + 1 bits fit in float32
    special = [0.0, -0.0, fmt_max, -fmt_max, min(fmt_max * 1.01, 3.0e38), tiny, tiny / 2,
               tiny / 2 * 1.0001, -tiny / 2, np.inf, -np.inf, 3.0e38, -3.0e38]
    ties = ties[np.abs(ties) < 3.4e38]
    return np.concatenate([values, ties.astype(np.float32), np.float32(special)])


@pytest.mark.parametrize(("e", "m", "dtype"), FORMATS, ids=IDS)
def test_cast_matches_ml_dtypes_bit_for_bit(e: int, m: int, dtype: type) -> None:
    x = _inputs(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = x.astype(dtype).astype(np.float32)
    got = round_to_minifloat(x, e, m, saturate=False)
    same = (got.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(got) & np.isnan(ref))
    assert same.all(), (x[~same][:5], got[~same][:5], ref[~same][:5])


@pytest.mark.parametrize(("e", "m", "dtype"), FORMATS, ids=IDS)
def test_saturating_cast_is_clip_then_cast(e: int, m: int, dtype: type) -> None:
    x = _inputs(dtype, seed=1)
    top = float(ml_dtypes.finfo(dtype).max)
    ref = np.clip(x, -top, top).astype(dtype).astype(np.float32)
    got = round_to_minifloat(x, e, m, saturate=True)
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_nan_stays_nan_where_the_format_has_nan() -> None:
    assert np.isnan(round_to_minifloat(np.float32(np.nan), 4, 3, saturate=False))
    assert np.isnan(round_to_minifloat(np.float32(np.nan), 5, 10, saturate=True))


@pytest.mark.parametrize(("e", "m", "dtype"), FORMATS, ids=IDS)
def test_table_and_patterns_match_the_format(e: int, m: int, dtype: type) -> None:
    fmt = minifloat_format(e, m)
    assert fmt.max_finite == float(ml_dtypes.finfo(dtype).max)
    values = minifloat_values(fmt)
    bits = fmt.bits
    if bits in (8, 16):
        raw = np.arange(1 << bits).astype(np.uint8 if bits == 8 else np.uint16)
        with np.errstate(invalid="ignore"):
            ref = raw.view(dtype).astype(np.float64)
        np.testing.assert_array_equal(values, ref)
    finite = np.isfinite(values)
    np.testing.assert_array_equal(
        minifloat_patterns(values[finite], fmt), np.arange(1 << bits)[finite]
    )


def test_encodings() -> None:
    assert minifloat_format(4, 3).encoding is Encoding.FN
    assert minifloat_format(5, 2).encoding is Encoding.IEEE
    assert minifloat_format(2, 1).encoding is Encoding.FINITE
    assert minifloat_format(1, 6).encoding is Encoding.FINITE


@pytest.mark.parametrize(("e", "m"), [(4, 3), (5, 2), (2, 1), (5, 10), (3, 4)])
def test_quantizer_maps_xmax_to_max_finite_and_never_emits_nan(e: int, m: int) -> None:
    rng = np.random.default_rng(2)
    x = rng.laplace(0, 1 / np.sqrt(2), 20_000).astype(np.float32)
    x[:2] = [50.0, -50.0]  # overload: saturates
    spec = QuantizerSpec(method=Method.FLOAT, exponent_bits=e, mantissa_bits=m).resolved()
    xmax = 4.0
    q = quantize(x, spec, xmax).quantized
    fmt = minifloat_format(e, m)
    values = minifloat_values(fmt)
    assert np.isfinite(values[q.codes]).all()
    np.testing.assert_array_equal(
        q.decoder.levels, np.ldexp(np.where(np.isfinite(values), values, 0), -fmt.max_exponent)
    )
    np.testing.assert_array_equal(decode(q.codes, q.decoder), q.dequantized)
    assert q.dequantized[0] == pytest.approx(xmax, rel=1e-6)
    assert q.dequantized[1] == pytest.approx(-xmax, rel=1e-6)
    # Each value is the format's rounding of x·(max_finite/xmax), computed in float32.
    scaled = x[2:] * np.float32(fmt.max_finite / xmax)
    want = round_to_minifloat(scaled, e, m, saturate=True)
    np.testing.assert_array_equal(values[q.codes[2:]], want)
