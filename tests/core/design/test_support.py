"""Support-region thresholds: each API choice on known weights, exactness, the MSE search."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import ndtri

from quantcore.design.support import choose_support, support_threshold
from quantcore.design.theory import hui_xmax, jayant_xmax
from quantcore.errors import InvalidSpecError, InvalidTensorError
from quantcore.quantizers.uniform import midrise
from quantcore.spec import Support


def _normalised(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean()) / x.std()).astype(np.float32)


def _quantiles(ppf: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """n evenly spaced quantiles of a distribution: a deterministic stand-in for samples."""
    u = (np.arange(n) + 0.5) / n
    return np.asarray(ppf(u), dtype=np.float64)


def _laplace_ppf(u: np.ndarray) -> np.ndarray:
    return np.where(u < 0.5, np.log(2 * u), -np.log(2 * (1 - u))) / math.sqrt(2)


def _midrise_mse(weights: np.ndarray, bits: int) -> Callable[[float], float]:
    """error_at for the service's midrise quantizer: measured MSE at a threshold."""
    design = midrise(bits)
    exact = weights.astype(np.float64)

    def error_at(xmax: float) -> float:
        unit = design.unit(xmax)
        t = (weights / np.float32(unit)).astype(np.float32)
        codes = np.empty(t.shape, design.dtype)
        design.encode(t, codes)
        return float(np.mean((exact - design.values(codes) * unit) ** 2))

    return error_at


WEIGHTS = np.array([[-1.5, 0.25, 2.0], [0.5, -0.75, 1.0]], dtype=np.float32)


@pytest.mark.parametrize(
    ("support", "expected"),
    [("wmax", 2.0), ("abs_wmin", 1.5), ("max_abs", 2.0), (Support.MAX_ABS, 2.0)],
)
def test_extreme_choices_on_known_weights(support: str, expected: float) -> None:
    assert support_threshold(support, levels=8, normalized=WEIGHTS) == expected


def test_one_sided_weights_use_the_other_extreme() -> None:
    negative = np.array([-3.0, -1.0, -0.5])
    positive = np.array([0.5, 1.0, 4.0])
    assert support_threshold("wmax", levels=8, normalized=negative) == 3.0
    assert support_threshold("abs_wmin", levels=8, normalized=positive) == 4.0
    # A zero on the named side still counts as "no weight of that sign".
    assert support_threshold("wmax", levels=8, normalized=np.array([-2.0, 0.0])) == 2.0


def test_rule_thresholds_ignore_the_weights() -> None:
    assert support_threshold("hui", levels=8, normalized=WEIGHTS) == hui_xmax(8)
    assert round(support_threshold("jayant", levels=8, normalized=WEIGHTS) / 4, 4) == 0.7309
    assert round(support_threshold("jayant", levels=4, normalized=WEIGHTS), 4) == 2.1748


def test_value_is_returned_as_given() -> None:
    assert support_threshold("value", levels=8, normalized=WEIGHTS, value=2.5) == 2.5


@pytest.mark.parametrize("q", [100.0, 50.0, 99.9, 12.5, 1e-6, 73.3])
def test_percentile_equals_numpy_exactly(q: float) -> None:
    rng = np.random.default_rng(7)
    for shape, dtype in (((301, 7), np.float32), ((1000,), np.float64), ((5, 4, 3), np.float16)):
        w = rng.laplace(size=shape).astype(dtype)
        expected = float(np.percentile(np.abs(w).astype(np.float64), q))
        got = support_threshold("percentile", levels=8, normalized=w, value=q)
        assert got == expected
    # The caller's array is read, not reordered.
    before = w.copy()
    support_threshold("percentile", levels=8, normalized=w, value=q)
    np.testing.assert_array_equal(w, before)


def test_percentile_of_known_magnitudes() -> None:
    w = np.array([-4.0, 1.0, -2.0, 3.0])
    assert support_threshold("percentile", levels=8, normalized=w, value=100) == 4.0
    assert support_threshold("percentile", levels=8, normalized=w, value=50) == 2.5


@settings(max_examples=50, deadline=None)
@given(
    w=arrays(np.float64, st.integers(1, 200), elements=st.floats(-1e3, 1e3)),
    q=st.floats(0.0, 100.0, exclude_min=True),
)
def test_percentile_property(w: np.ndarray, q: float) -> None:
    got = support_threshold("percentile", levels=8, normalized=w, value=q)
    expected = float(np.percentile(np.abs(w), q))
    if expected > 0:
        assert got == expected
    else:  # all zero up to that rank is a constant-looking support: the documented fallback
        assert got == jayant_xmax(8)


@pytest.mark.parametrize("support", ["wmax", "abs_wmin", "max_abs", "percentile", "mse"])
def test_constant_tensor_falls_back_to_jayant(support: str) -> None:
    zeros = np.zeros((4, 5), np.float32)
    choice = choose_support(
        support, levels=16, normalized=zeros, value=90.0, error_at=lambda x: 0.0
    )
    assert choice.xmax == jayant_xmax(16)
    assert choice.fallback
    assert not choose_support("max_abs", levels=16, normalized=WEIGHTS).fallback


def test_mse_finds_the_minimum_of_known_convex_errors() -> None:
    w = np.array([-6.0, 0.0, 6.0])  # max |w| = 6: the search covers [0.006, 6]
    for centre in (0.05, 1.7, 4.2, 5.99):

        def smooth_error(x: float, c: float = centre) -> float:
            return (x - c) ** 2 + 0.3

        def kinked_error(x: float, c: float = centre) -> float:
            return abs(math.log(x / c))

        smooth = support_threshold("mse", levels=8, normalized=w, error_at=smooth_error)
        kink = support_threshold("mse", levels=8, normalized=w, error_at=kinked_error)
        assert smooth == pytest.approx(centre, rel=2e-4)
        assert kink == pytest.approx(centre, rel=2e-4)
    # A minimum beyond the largest weight: the search stops at max |w|.
    edge = support_threshold("mse", levels=8, normalized=w, error_at=lambda x: (x - 9.0) ** 2)
    assert edge == pytest.approx(6.0, rel=1e-3)


@pytest.mark.parametrize(("bits", "step"), [(2, 0.9957), (3, 0.5860), (4, 0.3352)])
def test_mse_recovers_the_gaussian_optimal_uniform_steps(bits: int, step: float) -> None:
    # Max (1960) and Jayant's tables: the MSE-optimal uniform step for a unit Gaussian.
    w = _normalised(_quantiles(ndtri, 400_000))
    xmax = support_threshold("mse", levels=2**bits, normalized=w, error_at=_midrise_mse(w, bits))
    assert round(xmax / 2 ** (bits - 1), 4) == step


def test_mse_beats_jayant_on_truncated_laplacian_weights() -> None:
    # Seed 001: real weights lie in a bounded range ([-7.06, 4.84] for the MNIST MLP), so the
    # measured optimum sits below the unbounded source's 2.9236 and beats it in MSE.
    x = _quantiles(_laplace_ppf, 400_000)
    w = _normalised(x[(x > -7.063787) & (x < 4.8371024)])
    error_at = _midrise_mse(w, 3)
    best = support_threshold("mse", levels=8, normalized=w, error_at=error_at)
    assert 2.5 < best < jayant_xmax(8)
    assert error_at(best) < error_at(jayant_xmax(8))
    fine = np.linspace(best - 0.05, best + 0.05, 41)
    assert error_at(best) <= min(error_at(float(v)) for v in fine) + 1e-9
    # Lighter tails move the optimum further down, towards seed 001's experimental ~2.5.
    clipped = _normalised(np.clip(x, -2.5, 2.5))
    lighter = support_threshold("mse", levels=8, normalized=clipped,
                                error_at=_midrise_mse(clipped, 3))
    assert lighter < best


def test_nan_and_empty_weights_are_refused() -> None:
    with pytest.raises(InvalidTensorError, match="empty"):
        support_threshold("jayant", levels=8, normalized=np.zeros((0, 3)))
    with pytest.raises(InvalidTensorError, match="NaN or Inf"):
        support_threshold("max_abs", levels=8, normalized=np.array([1.0, np.nan]))
    with pytest.raises(InvalidTensorError, match="NaN or Inf"):
        support_threshold("percentile", levels=8, normalized=np.array([np.inf, 1.0]), value=50)


@pytest.mark.parametrize(
    ("support", "value", "fragment"),
    [
        ("value", None, "support_value is required"),
        ("value", -1.0, "support_value=-1.0"),
        ("value", math.inf, "support_value=inf"),
        ("percentile", None, "support_value is required"),
        ("percentile", 0.0, "support_value=0.0"),
        ("percentile", 100.5, "support_value=100.5"),
        ("percentile", True, "support_value=True"),
        ("median", None, "support='median'"),
        ("mse", None, "error_at"),
    ],
)
def test_invalid_choices_name_the_field(support: str, value: object, fragment: str) -> None:
    with pytest.raises(InvalidSpecError, match=fragment):
        support_threshold(support, levels=8, normalized=WEIGHTS, value=value)  # type: ignore[arg-type]


def test_invalid_levels_are_named() -> None:
    with pytest.raises(InvalidSpecError, match="levels="):
        support_threshold("hui", levels=7, normalized=WEIGHTS)
