"""Quantizer families: exact rules, the dead-zone identities, level counts, exact decoding."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.quantizers import design, quantize
from quantcore.quantizers.codes import AffineDecoder, CodebookDecoder, decode
from quantcore.quantizers.deadzone import design_deadzone
from quantcore.quantizers.mulaw import mulaw_levels
from quantcore.quantizers.uniform import midrise, midtread
from quantcore.spec import Method, QuantizerSpec, Rounding


def spec_of(**fields: object) -> QuantizerSpec:
    return QuantizerSpec(**fields).resolved()  # type: ignore[arg-type]


def laplace(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(0.0, 1 / math.sqrt(2), n).astype(np.float32)


def encode(d, t: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.empty(t.shape, d.dtype)
    d.encode(t.copy(), out)
    return out


FAMILIES = [
    {"method": Method.UNIFORM},
    {"method": Method.UNIFORM, "rounding": Rounding.MIDTREAD},
    {"method": Method.DEADZONE, "deadzone_ratio": 0.4},
    {"method": Method.MULAW, "mu": 255.0},
    {"method": Method.LOG},
]


# --- uniform midrise: seed 001 eq. 3 ---------------------------------------------------------


def test_midrise_three_bits_levels_and_ties_follow_eq3() -> None:
    d = midrise(3)  # Δ = 1 in these units: levels ±0.5, ±1.5, ±2.5, ±3.5
    t = np.array([0.0, -0.0, 0.2, 1.0, -1.0, 2.0, -2.0, 3.99, 4.0, -4.0, 9.0, -9.0], np.float32)
    values = d.values(encode(d, t))
    # |t| = k goes to the outer cell on both sides; 0 and -0 go to +Δ/2; overload is clipped.
    expected = [0.5, 0.5, 0.5, 1.5, -1.5, 2.5, -2.5, 3.5, 3.5, -3.5, 3.5, -3.5]
    assert values.tolist() == expected


def test_midrise_levels_are_2i_minus_1_xmax_over_n() -> None:
    xmax = 2.9236
    x = np.linspace(-4, 4, 100_001).astype(np.float32)
    result = quantize(x, spec_of(method=Method.UNIFORM, bits=3), xmax)
    levels = np.unique(result.quantized.dequantized.astype(np.float64))
    want = np.array([(2 * i - 1) * xmax / 8 for i in range(-3, 5)])
    np.testing.assert_allclose(levels, want, rtol=1e-6)
    assert isinstance(result.quantized.decoder, AffineDecoder)
    assert result.quantized.codes.dtype == np.int8
    assert (result.quantized.code_min, result.quantized.code_max) == (-4, 3)


def test_one_bit_midrise_keeps_the_sign() -> None:
    d = midrise(1)
    codes = encode(d, np.array([-3.0, -0.25, 0.0, 0.25, 3.0], np.float32))
    assert d.values(codes).tolist() == [-0.5, -0.5, 0.5, 0.5, 0.5]


def test_midtread_has_n_minus_1_levels_with_zero_and_edge_at_xmax() -> None:
    d = midtread(3)  # levels -3..3, Δ = xmax / 3.5
    assert d.support_edge == 3.5
    t = np.array([0.49, 0.5, -0.5, 1.49, 2.5, 3.49, 3.5, 100.0], np.float32)
    assert d.values(encode(d, t)).tolist() == [0.0, 1.0, -1.0, 1.0, 3.0, 3.0, 3.0, 3.0]


# --- dead-zone: seed 004 table 4 and its two identities --------------------------------------


def _grid_with_ties(bits: int, ratio: float, seed: int) -> np.ndarray:
    top = 1 << bits
    k = np.arange(-top, top + 1, dtype=np.float64)
    ties = np.concatenate([k, k + ratio, k - ratio, k + 0.5, k - 0.5])
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-top, top, 2000)
    return np.concatenate([ties, noise, [0.0, -0.0]]).astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(2, 10), seed=st.integers(0, 2**31 - 1))
def test_deadzone_ratio_zero_is_exactly_midrise(bits: int, seed: int) -> None:
    t = _grid_with_ties(bits, 0.0, seed)
    dz = design_deadzone(spec_of(method=Method.DEADZONE, bits=bits, deadzone_ratio=0.0))
    mr = midrise(bits)
    assert dz.support_edge == mr.support_edge  # same Δ for the same xmax
    dz_codes, mr_codes = encode(dz, t), encode(mr, t)
    np.testing.assert_array_equal(dz_codes.astype(int) - (1 << (bits - 1)), mr_codes)
    np.testing.assert_array_equal(dz.values(dz_codes), mr.values(mr_codes))


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(2, 10), seed=st.integers(0, 2**31 - 1))
def test_deadzone_ratio_half_is_exactly_midtread(bits: int, seed: int) -> None:
    t = _grid_with_ties(bits, 0.5, seed)
    dz = design_deadzone(spec_of(method=Method.DEADZONE, bits=bits, deadzone_ratio=0.5))
    mt = midtread(bits)
    assert dz.support_edge == mt.support_edge
    dz_codes, mt_codes = encode(dz, t), encode(mt, t)
    np.testing.assert_array_equal(dz_codes.astype(int) - mt.code_max, mt_codes)
    np.testing.assert_array_equal(dz.values(dz_codes), mt.values(mt_codes))


def test_deadzone_identities_hold_through_quantize() -> None:
    x = laplace(50_000, seed=3)
    for ratio, rounding, shift in ((0.0, Rounding.MIDRISE, 4), (0.5, Rounding.MIDTREAD, 3)):
        dz = quantize(x, spec_of(method=Method.DEADZONE, bits=3, deadzone_ratio=ratio), 2.5)
        un = quantize(x, spec_of(method=Method.UNIFORM, bits=3, rounding=rounding), 2.5)
        np.testing.assert_array_equal(
            dz.quantized.codes.astype(int) - shift, un.quantized.codes.astype(int)
        )


def test_deadzone_table4_values() -> None:
    d = design_deadzone(spec_of(method=Method.DEADZONE, bits=3, deadzone_ratio=0.4))
    # Δ = 1: zero below 0.4, then cells [0.4, 1.4) -> 0.9, [1.4, 2.4) -> 1.9, [2.4, ...) -> 2.9
    t = np.array([0.39, 0.4, -0.4, 1.39, 1.4, 2.4, 50.0, -50.0], np.float32)
    np.testing.assert_allclose(
        d.values(encode(d, t)), [0.0, 0.9, -0.9, 0.9, 1.9, 2.9, 2.9, -2.9], rtol=1e-6
    )
    assert d.support_edge == pytest.approx(3.4)  # top edge (M + σ)Δ = xmax
    assert d.code_max == 6  # 7 codes in 3 bits


# --- every family ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: "-".join(map(str, f.values())))
@settings(max_examples=15, deadline=None)
@given(bits=st.integers(2, 8), seed=st.integers(0, 2**31 - 1), xmax=st.floats(0.5, 8.0))
def test_at_most_n_levels_and_decode_is_exact(
    family: dict[str, object], bits: int, seed: int, xmax: float
) -> None:
    x = laplace(3000, seed)
    result = quantize(x, spec_of(bits=bits, **family), xmax)
    q = result.quantized
    assert np.unique(q.dequantized).size <= 1 << bits
    assert q.code_min <= int(q.codes.min()) and int(q.codes.max()) <= q.code_max
    assert q.code_bits <= bits
    np.testing.assert_array_equal(decode(q.codes, q.decoder), q.dequantized)
    assert q.dequantized.dtype == np.float32


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: "-".join(map(str, f.values())))
def test_codes_are_monotone_in_the_weight(family: dict[str, object]) -> None:
    x = np.linspace(-5, 5, 20_001).astype(np.float32)
    q = quantize(x, spec_of(bits=4, **family), 3.0).quantized
    assert np.all(np.diff(q.dequantized) >= 0)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: "-".join(map(str, f.values())))
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
def test_other_input_dtypes_give_float32(family: dict[str, object], dtype: type) -> None:
    x = laplace(1000).astype(dtype)
    q = quantize(x, spec_of(bits=4, **family), 3.0).quantized
    assert q.dequantized.dtype == np.float32
    np.testing.assert_array_equal(decode(q.codes, q.decoder), q.dequantized)
    ref = quantize(x.astype(np.float64), spec_of(bits=4, **family), 3.0).quantized
    assert np.mean(q.codes == ref.codes) > 0.99
    notes = quantize(x, spec_of(bits=4, **family), 3.0).notes
    assert any("dequantized weights are float32" in n for n in notes)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: "-".join(map(str, f.values())))
def test_constant_and_single_element(family: dict[str, object]) -> None:
    for x in (np.zeros(7, np.float32), np.array([0.0], np.float32)):
        result = quantize(x, spec_of(bits=3, **family), 2.0)
        q = result.quantized
        assert np.unique(q.codes).size == 1
        assert any("constant weights" in n for n in result.notes)
        np.testing.assert_array_equal(decode(q.codes, q.decoder), q.dequantized)


# --- mu-law and exponential ------------------------------------------------------------------


def test_mulaw_levels_follow_the_expanded_midrise_levels() -> None:
    levels = mulaw_levels(3, 255.0)
    y = (np.arange(-4, 4) + 0.5) / 4
    np.testing.assert_allclose(levels, np.sign(y) * (256.0 ** np.abs(y) - 1) / 255.0)
    d = design(spec_of(method=Method.MULAW, bits=3, mu=255.0))
    assert isinstance(quantize(laplace(10), spec_of(method=Method.MULAW), 3.0).quantized.decoder,
                      CodebookDecoder)
    # The companded edges: |t| with c(|t|) = k/4 sits on an edge and goes outward.
    edge = float(np.expm1(0.25 * math.log1p(255.0)) / 255.0)
    codes = encode(d, np.array([edge * 0.999, edge * 1.001], np.float32))
    assert codes.tolist() == [4, 5]


def test_exponential_levels_are_geometric_and_beat_powers_of_two() -> None:
    x = laplace(200_000, seed=5).astype(np.float64)
    xmax = float(np.abs(x).max())
    result = quantize(x, spec_of(method=Method.LOG, bits=3), xmax)
    d = result.design
    positive = d.levels[4:].astype(np.float64)
    ratios = positive[1:] / positive[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)
    np.testing.assert_allclose(d.levels[:4], -positive[::-1])

    def correlation(w: np.ndarray, wq: np.ndarray) -> float:
        return float(np.dot(w, wq) / math.sqrt(np.dot(w, w) * np.dot(wq, wq)))

    designed = correlation(x, result.quantized.dequantized.astype(np.float64))
    # The classic log quantizer: powers of two below max|w|, nearest level.
    pow2 = xmax * 2.0 ** -np.arange(4.0)[::-1] / 2
    nearest = pow2[np.argmin(np.abs(np.abs(x)[:, None] - pow2[None, :]), axis=1)]
    assert designed > correlation(x, np.sign(x) * nearest) + 0.01
    assert designed == pytest.approx(d.correlation, abs=2e-3)
