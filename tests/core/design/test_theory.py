"""Closed-form Laplacian theory: seed 001's tables, numerical integration, design rules."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from quantcore.design import theory
from quantcore.design.extremes import given_extremes, within_reach
from quantcore.design.theory import (
    JAYANT_TABLE_MAX_BITS,
    MAX_LEVELS,
    hui_xmax,
    iterative_xmax,
    jayant_xmax,
    laplacian_deadzone_distortion,
    laplacian_deadzone_sqnr_db,
    laplacian_midtread_distortion,
    laplacian_midtread_sqnr_db,
    laplacian_uniform_distortion,
    laplacian_uniform_sqnr_db,
    lloyd_step,
    mse_optimal_xmax,
)
from quantcore.errors import InvalidSpecError
from quantcore.quantizers.families import design
from quantcore.spec import Method, QuantizerSpec, Rounding

SQRT2 = math.sqrt(2.0)


# Seed 001, table 2 (three bits) and table 3 (two bits): theoretical SQNR for the
# unit-variance Laplacian at the four support choices of the MNIST MLP.
@pytest.mark.parametrize(
    ("bits", "xmax", "sqnr"),
    [
        (3, 2.9236, 11.4419),
        (3, 2.9408, 11.4414),
        (3, 4.8371024, 8.6901),
        (3, 7.063787, 5.1273),
        (2, 1.9605, 6.9787),
        (2, 2.1748, 7.0707),
        (2, 4.8371024, 1.9360),
        (2, 7.063787, -2.0066),
    ],
)
def test_sqnr_matches_seed_001_tables(bits: int, xmax: float, sqnr: float) -> None:
    assert round(float(laplacian_uniform_sqnr_db(xmax, 2**bits)), 4) == sqnr


def test_three_bit_distortion_is_seed_001_eq_14() -> None:
    xmax = np.linspace(0.05, 12.0, 200)
    eq14 = 1 + (xmax / 8) ** 2 - SQRT2 * (xmax / 8) * (
        1 + 2 * sum(np.exp(-i * SQRT2 * xmax / 4) for i in (1, 2, 3))
    )
    np.testing.assert_allclose(laplacian_uniform_distortion(xmax, 8), eq14, rtol=1e-12)


def _laplace(sigma: float) -> Callable[[float], float]:
    a = SQRT2 / sigma
    return lambda x: 0.5 * a * math.exp(-a * abs(x))


def _integrated(
    step: float, max_index: int, ratio: float, sigma: float, reach: float = math.inf
) -> float:
    """MSE of the seed 004 table 4 quantizer by adaptive quadrature, cell by cell (x ≥ 0);
    with ``reach``, over the source restricted to ``|x| ≤ reach`` (beyond the top edge)."""
    p = _laplace(sigma)
    total = 0.0
    if ratio > 0:
        total += quad(lambda x: x * x * p(x), 0.0, ratio * step)[0]
    for k in range(1, max_index + 1):
        lo, hi = (k - 1 + ratio) * step, (k + ratio) * step
        level = (k + ratio - 0.5) * step
        total += quad(lambda x, y=level: (x - y) ** 2 * p(x), lo, hi)[0]
    top, level = (max_index + ratio) * step, (max_index + ratio - 0.5) * step
    total += quad(lambda x: (x - level) ** 2 * p(x), top, reach)[0]
    if math.isfinite(reach):
        total /= 2.0 * quad(p, 0.0, reach)[0]
    return 2.0 * total


@pytest.mark.parametrize("levels", [2, 4, 8, 16, 64])
@pytest.mark.parametrize("sigma", [1.0, 0.3, 4.0])
def test_midrise_and_midtread_agree_with_numerical_integration(levels: int, sigma: float) -> None:
    xmax = 0.9 * jayant_xmax(levels)
    half = levels // 2
    midrise = _integrated(2 * xmax / levels, half, 0.0, sigma)
    midtread = _integrated(2 * xmax / (levels - 1), half - 1, 0.5, sigma)
    assert laplacian_uniform_distortion(xmax, levels, sigma) == pytest.approx(midrise, rel=1e-9)
    assert laplacian_midtread_distortion(xmax, levels, sigma) == pytest.approx(
        midtread, rel=1e-9
    )


@pytest.mark.parametrize("levels", [4, 16, 256])
@pytest.mark.parametrize("beyond", [0.0, 0.4, 2.5, 30.0])
def test_within_reach_is_the_restricted_source_integrated(levels: int, beyond: float) -> None:
    """A block's weights stop at their largest: the Laplacian restricted to ``|x| ≤ reach``,
    from a quantizer spanning exactly that range (``beyond`` 0) to one clipped well inside."""
    xmax = 2.4 if levels == 4 else 3.3
    reach = xmax + beyond
    for distortion, step, max_index, ratio in (
        (laplacian_uniform_distortion, 2 * xmax / levels, levels // 2, 0.0),
        (laplacian_midtread_distortion, 2 * xmax / (levels - 1), levels // 2 - 1, 0.5),
    ):
        found = within_reach(np.asarray(distortion(xmax, levels)), np.asarray(xmax),
                                    np.asarray(step), np.asarray(reach))  # fmt: skip
        expected = _integrated(step, max_index, ratio, 1.0, reach)
        assert float(found) == pytest.approx(expected, rel=1e-7), (distortion, levels, beyond)
    # Far beyond every weight the restriction no longer matters.
    far = within_reach(np.asarray(laplacian_uniform_distortion(xmax, levels)),
                              np.asarray(xmax), np.asarray(2 * xmax / levels), np.asarray(60.0))
    assert float(far) == pytest.approx(laplacian_uniform_distortion(xmax, levels), rel=1e-12)


def test_given_extremes_weighs_the_extremes_and_the_rest() -> None:
    """A group of one extreme weight at the grid's edge: half a step of error; a large group:
    the restricted source alone; a clipped extreme pays its overload."""
    xmax, levels = 3.0, 16
    step = np.asarray(2 * xmax / levels)
    whole = np.asarray(laplacian_uniform_distortion(xmax, levels))
    x, reach = np.asarray(xmax), np.asarray(xmax)
    assert float(given_extremes(whole, x, step, reach, 1)) == pytest.approx(
        (step / 2) ** 2, rel=1e-12)  # fmt: skip
    inner = float(within_reach(whole, x, step, reach))
    assert float(given_extremes(whole, x, step, reach, 10**9)) == pytest.approx(
        inner, rel=1e-8)  # fmt: skip
    clipped = float(given_extremes(whole, x, step, np.asarray(5.0), 2, extremes=2))
    assert clipped == pytest.approx((5.0 - xmax + step / 2) ** 2, rel=1e-12)


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.4, 0.7, 1.0])
def test_deadzone_agrees_with_numerical_integration(ratio: float) -> None:
    step, max_index = 0.37, 7
    expected = _integrated(step, max_index, ratio, 1.3)
    got = laplacian_deadzone_distortion(step, max_index=max_index, ratio=ratio, sigma=1.3)
    assert got == pytest.approx(expected, rel=1e-9)


def test_deadzone_ratios_zero_and_half_are_midrise_and_midtread() -> None:
    xmax = np.linspace(0.1, 9.0, 50)
    for levels in (4, 32, 1024):
        midrise = laplacian_deadzone_distortion(2 * xmax / levels, max_index=levels // 2, ratio=0)
        midtread = laplacian_deadzone_distortion(
            2 * xmax / (levels - 1), max_index=levels // 2 - 1, ratio=0.5
        )
        np.testing.assert_allclose(midrise, laplacian_uniform_distortion(xmax, levels), rtol=1e-14)
        np.testing.assert_allclose(
            midtread, laplacian_midtread_distortion(xmax, levels), rtol=1e-14
        )


def test_deadzone_sqnr_follows_the_quantizer_convention() -> None:
    # M = N/2 - 1 levels a side for ratio > 0 (N/2 for ratio 0) and Δ = xmax/(M + ratio).
    xmax = np.array([1.0, 2.9236, 6.0])
    np.testing.assert_allclose(
        laplacian_deadzone_sqnr_db(xmax, 8, 0.0), laplacian_uniform_sqnr_db(xmax, 8), rtol=1e-14
    )
    np.testing.assert_allclose(
        laplacian_deadzone_sqnr_db(xmax, 8, 0.5), laplacian_midtread_sqnr_db(xmax, 8), rtol=1e-14
    )
    step = 2.9236 / 3.4
    expected = 10 * math.log10(1 / _integrated(step, 3, 0.4, 1.0))
    assert laplacian_deadzone_sqnr_db(2.9236, 8, 0.4) == pytest.approx(expected, rel=1e-9)
    # One bit with a dead zone leaves only the zero level.
    assert laplacian_deadzone_sqnr_db(2.0, 2, 0.4, 3.0) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("levels", "xmax", "sigma"), [(MAX_LEVELS, 14.3, 1.0),
                                                       (MAX_LEVELS, 9.0, 0.05),
                                                       (4096, 10.6, 2.0)])
def test_high_rate_distortion_keeps_relative_accuracy(
    levels: int, xmax: float, sigma: float
) -> None:
    # 32768 cells per side: fold them onto one cell, x = c_k + t, and sum the Laplacian
    # weights of the cell centres directly; quad then integrates t² over [-h, h].
    a = SQRT2 / sigma
    step = 2 * xmax / levels
    h = step / 2
    centres = (np.arange(levels // 2) + 0.5) * step
    weight = float(np.sum(np.exp(-a * centres)))
    granular = quad(lambda t: t * t * a * math.exp(-a * t) * weight, -h, h, epsabs=0)[0]
    overload = quad(lambda x: (x - xmax + h) ** 2 * a * math.exp(-a * x), xmax, math.inf)[0]
    expected = granular + overload
    got = laplacian_uniform_distortion(xmax, levels, sigma)
    assert got == pytest.approx(expected, rel=1e-10)


def test_degenerate_thresholds() -> None:
    assert laplacian_uniform_distortion(0.0, 8) == pytest.approx(1.0)
    assert laplacian_uniform_sqnr_db(0.0, 256, 3.0) == pytest.approx(0.0, abs=1e-12)
    # One midtread level (zero) leaves the whole variance whatever the threshold.
    assert laplacian_midtread_sqnr_db(np.array([0.0, 1.0, 50.0]), 2) == pytest.approx(0.0)
    assert laplacian_deadzone_distortion(0.0, max_index=3, ratio=0.4, sigma=2.0) == (
        pytest.approx(4.0)
    )


def test_arrays_broadcast_like_scalars() -> None:
    xmax = np.array([0.5, 2.0, 6.0])
    sigma = np.array([[0.5], [1.0], [3.0]])
    grid = laplacian_uniform_sqnr_db(xmax, 16, sigma)
    assert isinstance(grid, np.ndarray) and grid.shape == (3, 3)
    for i, s in enumerate(sigma[:, 0]):
        for j, x in enumerate(xmax):
            assert grid[i, j] == laplacian_uniform_sqnr_db(float(x), 16, float(s))
    assert isinstance(laplacian_uniform_sqnr_db(2.0, 16), float)


@pytest.mark.parametrize("levels", [0, 3, 7, 2**17, True, 8.0, "8"])
def test_invalid_levels_are_named(levels: object) -> None:
    with pytest.raises(InvalidSpecError, match="levels="):
        laplacian_uniform_distortion(1.0, levels)  # type: ignore[arg-type]


@pytest.mark.parametrize(("xmax", "sigma", "name"), [(-1.0, 1.0, "xmax"),
                                                     (math.nan, 1.0, "xmax"),
                                                     (1.0, 0.0, "sigma"),
                                                     (1.0, math.inf, "sigma")])
def test_invalid_threshold_or_sigma_is_named(xmax: float, sigma: float, name: str) -> None:
    with pytest.raises(InvalidSpecError, match=f"{name}="):
        laplacian_uniform_distortion(xmax, 8, sigma)


def test_invalid_deadzone_parameters_are_named() -> None:
    with pytest.raises(InvalidSpecError, match="ratio="):
        laplacian_deadzone_distortion(0.5, max_index=3, ratio=1.5)
    with pytest.raises(InvalidSpecError, match="max_index="):
        laplacian_deadzone_distortion(0.5, max_index=-1, ratio=0.4)


def test_jayant_thresholds_match_the_published_steps() -> None:
    # Jayant's table gives the optimal step Δ = 2·xmax/N to four decimals: 1.0874 for N = 4
    # and 0.7309 for N = 8, which seed 001 quotes as xmax = 2.1748 and 2.9236.
    assert round(mse_optimal_xmax(4) / 2, 4) == 1.0874
    assert round(mse_optimal_xmax(8) / 4, 4) == 0.7309
    assert round(jayant_xmax(4), 4) == 2.1748
    assert round(jayant_xmax(8), 4) == 2.9236
    assert round(jayant_xmax(2), 4) == 1.4142
    assert mse_optimal_xmax(2) == pytest.approx(SQRT2, rel=1e-15)


def test_jayant_thresholds_are_the_optimum_to_table_precision() -> None:
    # Up to 5 bits the rounding moves the SQNR by less than 1e-7 dB; beyond, nothing is rounded.
    for bits in range(1, 17):
        levels = 2**bits
        quoted, exact = jayant_xmax(levels), mse_optimal_xmax(levels)
        if bits <= JAYANT_TABLE_MAX_BITS:
            assert abs(2 * quoted / levels - 2 * exact / levels) <= 0.5e-4
            sqnr = laplacian_uniform_sqnr_db
            assert 0 <= sqnr(exact, levels) - sqnr(quoted, levels) < 1e-7
        else:
            assert quoted == exact


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 12, 16])
def test_jayant_threshold_is_a_minimum(bits: int) -> None:
    levels = 2**bits
    best = mse_optimal_xmax(levels)
    d = laplacian_uniform_distortion(best, levels)
    for factor in (0.999, 1.001, 0.9, 1.1):
        assert laplacian_uniform_distortion(best * factor, levels) > d


def test_hui_thresholds() -> None:
    assert round(hui_xmax(8), 4) == 2.9408
    assert round(hui_xmax(4), 4) == 1.9605
    assert hui_xmax(MAX_LEVELS) == pytest.approx(SQRT2 * 16 * math.log(2))


def test_iterative_rule_lowers_distortion_step_by_step_towards_jayant() -> None:
    xmax = hui_xmax(8)
    d = laplacian_uniform_distortion(xmax, 8)
    for _ in range(200):
        xmax = lloyd_step(xmax, 8)
        new = laplacian_uniform_distortion(xmax, 8)
        assert new <= d + 1e-16
        d = new
    # mse_optimal_xmax minimises D directly, which pins the optimum to about 1e-8 relative.
    assert xmax == pytest.approx(mse_optimal_xmax(8), rel=1e-8)


@pytest.mark.parametrize("bits", range(1, 17))
def test_iterative_design_converges_to_jayant(bits: int) -> None:
    design = iterative_xmax(2**bits)
    assert design.converged
    assert design.xmax == pytest.approx(mse_optimal_xmax(2**bits), rel=5e-8)
    assert design.distortion == pytest.approx(
        laplacian_uniform_distortion(mse_optimal_xmax(2**bits), 2**bits), rel=1e-12
    )


def test_iterative_design_reaches_the_published_thresholds() -> None:
    assert round(iterative_xmax(4).xmax / 2, 4) == 1.0874
    assert round(iterative_xmax(8).xmax / 4, 4) == 0.7309


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 15))
def test_more_bits_never_lower_the_optimal_sqnr(bits: int) -> None:
    low = laplacian_uniform_sqnr_db(jayant_xmax(2**bits), 2**bits)
    high = laplacian_uniform_sqnr_db(jayant_xmax(2 ** (bits + 1)), 2 ** (bits + 1))
    assert high > low


@settings(max_examples=200, deadline=None)
@given(
    xmax=st.floats(0.0, 60.0),
    bits=st.integers(1, 16),
    sigma=st.floats(1e-3, 1e3),
)
def test_distortion_is_positive_and_bounded(xmax: float, bits: int, sigma: float) -> None:
    levels = 2**bits
    d = laplacian_uniform_distortion(xmax, levels, sigma)
    # Every error is at most |x| in the overload region and at most |x| + Δ/2 with
    # (x - Δ/2)² ≤ x² + (Δ/2)² in the first cell, so D ≤ σ² + (Δ/2)², Δ/2 = xmax/N.
    assert 0.0 < d <= sigma**2 + (xmax / levels) ** 2 + 1e-12 * sigma**2
    assert laplacian_midtread_distortion(xmax, levels, sigma) > 0.0


@settings(max_examples=100, deadline=None)
@given(xmax=st.floats(0.01, 40.0), bits=st.integers(1, 16), sigma=st.floats(1e-2, 1e2))
def test_distortion_scales_with_variance(xmax: float, bits: int, sigma: float) -> None:
    # A threshold scaled with σ sees the same source up to scale: D(σ·x, σ) = σ²·D(x, 1).
    scaled = laplacian_uniform_distortion(sigma * xmax, 2**bits, sigma)
    assert scaled == pytest.approx(sigma**2 * laplacian_uniform_distortion(xmax, 2**bits), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 16), sigma=st.floats(0.05, 20.0))
def test_variance_mismatch_never_beats_the_matched_design(bits: int, sigma: float) -> None:
    levels = 2**bits
    # The unrounded optimum: Jayant's rounded threshold can be beaten by 1e-8 dB near σ = 1.
    mismatched = laplacian_uniform_sqnr_db(mse_optimal_xmax(levels), levels, sigma)
    matched = laplacian_uniform_sqnr_db(sigma * mse_optimal_xmax(levels), levels, sigma)
    assert mismatched <= matched + 1e-9


@pytest.mark.parametrize("bits", range(8, 17))
def test_high_rate_gain_per_bit(bits: int) -> None:
    # At high rate D ≈ Δ²/12 = xmax²/(3N²): each bit adds 6.02 dB less the growth of the
    # optimal threshold (about sqrt(2)·ln N, the Laplacian's loss), and overload costs a little.
    levels = 2**bits
    here, below = jayant_xmax(levels), jayant_xmax(levels // 2)
    gain = laplacian_uniform_sqnr_db(here, levels) - laplacian_uniform_sqnr_db(below, levels // 2)
    granular_only = 20 * math.log10(2) - 20 * math.log10(here / below)
    assert granular_only < gain < 20 * math.log10(2)
    assert gain == pytest.approx(granular_only, abs=0.15)
    approx = 10 * math.log10(3 * levels**2 / here**2)
    assert approx - 1.0 < laplacian_uniform_sqnr_db(here, levels) < approx



@pytest.mark.parametrize(
    ("spec", "theory_db"),
    [
        (QuantizerSpec(bits=2), lambda x: laplacian_uniform_sqnr_db(x, 4)),
        (QuantizerSpec(bits=3), lambda x: laplacian_uniform_sqnr_db(x, 8)),
        (QuantizerSpec(bits=8), lambda x: laplacian_uniform_sqnr_db(x, 256)),
        (QuantizerSpec(bits=3, rounding=Rounding.MIDTREAD),
         lambda x: laplacian_midtread_sqnr_db(x, 8)),
        (QuantizerSpec(bits=6, rounding=Rounding.MIDTREAD),
         lambda x: laplacian_midtread_sqnr_db(x, 64)),
        (QuantizerSpec(method=Method.DEADZONE, bits=4, deadzone_ratio=0.4),
         lambda x: laplacian_deadzone_sqnr_db(x, 16, 0.4)),
        (QuantizerSpec(method=Method.DEADZONE, bits=3, deadzone_ratio=0.7),
         lambda x: laplacian_deadzone_sqnr_db(x, 8, 0.7)),
    ],
)
def test_closed_forms_predict_the_service_quantizers(
    spec: QuantizerSpec, theory_db: Callable[[float], float]
) -> None:
    # 2M evenly spaced quantiles of the unit Laplacian stand in for the source; the measured
    # SQNR of the service's own quantizer must match the closed form of the same convention.
    n = 2_000_000
    u = (np.arange(n) + 0.5) / n
    w = np.where(u < 0.5, np.log(2 * u), -np.log(2 * (1 - u))) / SQRT2
    quantizer = design(spec.resolved())
    for xmax in (0.6 * jayant_xmax(spec.levels), jayant_xmax(spec.levels), 5.0):
        unit = quantizer.unit(xmax)
        codes = np.empty(w.shape, quantizer.dtype)
        quantizer.encode(w / unit, codes)
        error = w - quantizer.values(codes) * unit
        measured = 10 * math.log10(np.mean(w * w) / np.mean(error * error))
        # The quantile grid stops at ln(n)/sqrt(2) ≈ 10.3: at 8 bits the overload share of
        # the (small) error is large enough for that missing tail to show.
        assert measured == pytest.approx(theory_db(xmax), abs=0.01 if spec.bits < 8 else 0.05)


@pytest.mark.parametrize("levels", [4, 16, 256])
def test_a_curve_of_fine_steps_is_its_points_bit_for_bit(levels: int) -> None:
    # Arrays whose steps are all fine take the series alone (in place); a single value takes
    # the general path: the same numbers.
    xmax = np.random.default_rng(levels).uniform(0.0, 8.0, 64)
    for curve in (theory.laplacian_uniform_distortion, theory.laplacian_midtread_distortion):
        together = np.asarray(curve(xmax, levels, 1.0))
        alone = np.array([curve(float(x), levels, 1.0) for x in xmax])
        assert together.view(np.uint64).tolist() == alone.view(np.uint64).tolist()
    u = np.linspace(0.0, 2.0, 101)
    spelled = np.polyval(theory._PHI, u * u) / np.polyval(theory._SINHC, u * u)
    assert np.array_equal(theory._rho_over_u2(u), spelled)
