"""Seed 000's bit-rate rule under variance mismatch, for a Laplacian source.

A midrise quantizer designed for unit variance meets data whose standard deviation σ is
anywhere in a range (σmin, σmax). ``bits_for_sqnr`` picks the smallest rate whose SQNR stays
above a target over the whole range, from the closed forms of ``quantcore.design.theory``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from quantcore.design.brent import bounded_minimum
from quantcore.design.theory import check_levels, jayant_xmax, laplacian_uniform_sqnr_db
from quantcore.errors import InvalidSpecError


class Design(StrEnum):
    """How ``bits_for_sqnr`` places the threshold, in units of the design σ = 1."""

    JAYANT = "jayant"  # MSE-optimal for σ = 1 (jayant_xmax)
    MINIMAX = "minimax"  # maximises the worst-case SQNR over the variance range


@dataclass(frozen=True, kw_only=True)
class BitRateChoice:
    """Result of ``bits_for_sqnr``: the bit rate and its worst case over the variance range.

    ``worst_sigma`` is the data standard deviation (design σ = 1) where the SQNR is lowest,
    ``worst_variance_db`` the same as 20·log10(worst_sigma) (variance mismatch in dB).
    """

    bits: int
    design: Design
    xmax: float
    target_db: float
    sigma_min: float
    sigma_max: float
    worst_sqnr_db: float
    worst_sigma: float
    worst_variance_db: float


_GRID = 401


def _worst_case(xmax: float, levels: int, lo: float, hi: float) -> tuple[float, float]:
    """(lowest SQNR dB, its σ) over σ in [lo, hi]: log-spaced grid, then Brent refinement."""
    log_s = np.linspace(math.log(lo), math.log(hi), _GRID)
    curve = np.asarray(laplacian_uniform_sqnr_db(xmax, levels, np.exp(log_s)))
    k = int(np.argmin(curve))
    best_log, best = float(log_s[k]), float(curve[k])
    if 0 < k < _GRID - 1:
        found = bounded_minimum(
            lambda t: float(laplacian_uniform_sqnr_db(xmax, levels, math.exp(t))),
            (float(log_s[k - 1]), float(log_s[k + 1])),
        )
        if found.fun < best:
            best_log, best = float(found.x), float(found.fun)
    return best, math.exp(best_log)


def minimax_xmax(levels: int, sigma_range: tuple[float, float]) -> float:
    """The threshold (design σ = 1) maximising the worst-case SQNR over σ in ``sigma_range``.

    Bounded Brent search over xmax in [jayant_xmax(N)·σmin/2, 2·jayant_xmax(N)·σmax]: a
    threshold below the first scale only adds overload at every σ in the range, one above the
    second only granular noise. For a range holding only σ = 1 it is ``jayant_xmax``.
    """
    n = check_levels(levels)
    lo, hi = _sigma_range(sigma_range)
    base = jayant_xmax(n)
    found = bounded_minimum(lambda x: -_worst_case(x, n, lo, hi)[0],
                            (0.5 * base * lo, 2.0 * base * hi), xatol=1e-6 * base)  # fmt: skip
    return float(found.x)


def _sigma_range(sigma_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in sigma_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise InvalidSpecError(f"{sigma_range=} must hold 0 < sigma_min <= sigma_max")
    return lo, hi


def _design_xmax(rule: Design, levels: int, sigma_range: tuple[float, float]) -> float:
    if rule is Design.JAYANT:
        return jayant_xmax(levels)
    return minimax_xmax(levels, sigma_range)


def bits_for_sqnr(
    target_db: float,
    sigma_range: tuple[float, float],
    *,
    design: Design | str = Design.JAYANT,
    max_bits: int = 16,
) -> BitRateChoice:
    """The smallest bit rate whose SQNR stays ≥ ``target_db`` over a range of data variances.

    Seed 000's bit-rate rule, designed here from first principles (the seed text holds only
    the abstract): the midrise quantizer is designed for unit variance and applied to
    Laplacian data of standard deviation σ anywhere in ``sigma_range`` = (σmin, σmax), e.g.
    (0.1, 10) for a variance mismatch of -20..+20 dB. The threshold is ``jayant_xmax(N)``
    (``design="jayant"``) or ``minimax_xmax(N, sigma_range)`` (``design="minimax"``). For
    R = 1..max_bits the worst-case SQNR(σ) = 10·log10(σ²/D(xmax, N, σ)) over the range is
    found (401-point log grid in σ, refined by bounded Brent minimisation) and the first R
    meeting the target is returned. With the Jayant threshold, data wider than the design
    overloads at every rate (SQNR above σ = 1 saturates), so ranges reaching well above σ = 1
    need the minimax design; below σ = 1 each bit adds about 6 dB.

    Raises ``InvalidSpecError`` for a non-finite target, a range that is not
    0 < σmin ≤ σmax, or a target no rate up to ``max_bits`` meets (the message gives the best).
    """
    if not math.isfinite(target_db):
        raise InvalidSpecError(f"{target_db=} must be a finite number of decibels")
    lo, hi = _sigma_range(sigma_range)
    try:
        rule = Design(design)
    except ValueError:
        raise InvalidSpecError(f"{design=} must be one of: jayant, minimax") from None
    if not 1 <= max_bits <= 16:
        raise InvalidSpecError(f"{max_bits=} must be between 1 and 16")
    best = -math.inf
    for bits in range(1, max_bits + 1):
        levels = 1 << bits
        xmax = _design_xmax(rule, levels, (lo, hi))
        worst, where = _worst_case(xmax, levels, lo, hi)
        best = max(best, worst)
        if worst >= target_db:
            return BitRateChoice(
                bits=bits, design=rule, xmax=xmax, target_db=float(target_db),
                sigma_min=lo, sigma_max=hi, worst_sqnr_db=worst, worst_sigma=where,
                worst_variance_db=20.0 * math.log10(where),
            )
    raise InvalidSpecError(
        f"{target_db=} is not reachable over {sigma_range=} with at most {max_bits} bits "
        f"({rule.value} design): the best worst-case SQNR is {best:.2f} dB"
    )
