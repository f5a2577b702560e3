"""Seed 000's bit-rate rule: the smallest rate that holds an SQNR over a variance range."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.design.bitrate import BitRateChoice, Design, bits_for_sqnr, minimax_xmax
from quantcore.design.theory import jayant_xmax, laplacian_uniform_sqnr_db, mse_optimal_xmax
from quantcore.errors import InvalidSpecError


def _worst_on_grid(xmax: float, bits: int, lo: float, hi: float) -> float:
    sigma = np.geomspace(lo, hi, 2001)
    return float(np.min(laplacian_uniform_sqnr_db(xmax, 2**bits, sigma)))


def test_matched_variance_picks_the_rate_from_seed_001_tables() -> None:
    # 2 bits reach 7.0707 dB and 3 bits 11.4419 dB at the Jayant threshold.
    choice = bits_for_sqnr(11.0, (1.0, 1.0))
    assert isinstance(choice, BitRateChoice)
    assert choice.bits == 3
    assert round(choice.worst_sqnr_db, 4) == 11.4419
    assert choice.worst_sigma == pytest.approx(1.0)
    assert bits_for_sqnr(7.0, (1.0, 1.0)).bits == 2


@pytest.mark.parametrize("target", [10.0, 25.0, 35.0])
def test_rate_is_the_smallest_that_holds_over_small_variances(target: float) -> None:
    lo, hi = 0.01, 1.0  # weights 0..-40 dB below the design variance
    choice = bits_for_sqnr(target, (lo, hi))
    assert choice.worst_sqnr_db >= target
    assert _worst_on_grid(choice.xmax, choice.bits, lo, hi) == pytest.approx(
        choice.worst_sqnr_db, abs=1e-3
    )
    below = choice.bits - 1
    assert _worst_on_grid(jayant_xmax(2**below), below, lo, hi) < target
    # Granular noise dominates below the design variance: the worst case is the smallest σ.
    assert choice.worst_sigma == pytest.approx(lo)
    assert choice.worst_variance_db == pytest.approx(-40.0)


def test_jayant_design_overloads_above_the_design_variance() -> None:
    with pytest.raises(InvalidSpecError, match="target_db=20"):
        bits_for_sqnr(20.0, (0.1, 10.0))


def test_minimax_design_holds_a_wide_range() -> None:
    lo, hi = 0.1, 10.0
    choice = bits_for_sqnr(20.0, (lo, hi), design="minimax")
    assert choice.design is Design.MINIMAX
    assert choice.worst_sqnr_db >= 20.0
    assert _worst_on_grid(choice.xmax, choice.bits, lo, hi) >= 20.0 - 1e-6
    # It beats the Jayant threshold's worst case at every rate it was tried at.
    for bits in range(2, choice.bits + 1):
        assert _worst_on_grid(minimax_xmax(2**bits, (lo, hi)), bits, lo, hi) > _worst_on_grid(
            jayant_xmax(2**bits), bits, lo, hi
        )


def test_minimax_of_the_matched_case_is_jayant() -> None:
    assert minimax_xmax(8, (1.0, 1.0)) == pytest.approx(mse_optimal_xmax(8), rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"target_db": float("nan"), "sigma_range": (1.0, 1.0)}, "target_db="),
        ({"target_db": 10.0, "sigma_range": (2.0, 1.0)}, "sigma_range="),
        ({"target_db": 10.0, "sigma_range": (0.0, 1.0)}, "sigma_range="),
        ({"target_db": 10.0, "sigma_range": (1.0, 1.0), "design": "best"}, "design="),
        ({"target_db": 10.0, "sigma_range": (1.0, 1.0), "max_bits": 17}, "max_bits="),
        ({"target_db": 500.0, "sigma_range": (1.0, 1.0)}, "target_db=500"),
    ],
)
def test_invalid_requests_are_named(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidSpecError, match=fragment):
        bits_for_sqnr(**kwargs)  # type: ignore[arg-type]
