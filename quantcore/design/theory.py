"""Closed-form distortion and SQNR of symmetric uniform quantizers for a Laplacian source.

Source: the zero-mean Laplacian ``p(x) = exp(-sqrt(2)·|x|/σ) / (sqrt(2)·σ)`` of variance σ².
Folded onto x ≥ 0 it is the exponential density ``a·exp(-a·x)`` with ``a = sqrt(2)/σ``.

One family covers the three quantizers of the service (seed 004, table 4): step Δ, dead-zone
ratio ``r`` and ``M`` positive levels. Magnitudes in ``[0, rΔ)`` go to 0; the cell
``((k-1+r)Δ, (k+r)Δ]`` goes to its midpoint ``(k+r-1/2)Δ`` for ``k = 1..M``; everything beyond
the top edge ``T = (M+r)Δ`` (the overload region) goes to the outermost level ``T - Δ/2``.

- midrise (seed 001 eq. 3): ``r = 0``, ``M = N/2``, ``Δ = 2·xmax/N`` (N levels ``(2i-1)·xmax/N``);
- midtread: ``r = 1/2``, ``M = N/2 - 1``, ``Δ = 2·xmax/(N-1)`` (N-1 levels ``kΔ``, zero exact);
- dead-zone: any ``r`` in [0, 1], with the step and level count its quantizer uses.

With ``h = Δ/2``, ``u = a·h``, ``φ(u) = (a²/2)·∫ t²·a·e^{-at} dt`` over ``[-h, h]`` (the
granular error of a cell centred at 0) and ``ρ(u) = φ(u)/sinh(u) = u² + 2 - 2u·coth(u)``,
seed 001 eq. 8-12 sum, as a geometric series over the cells, to

    D = σ²·γ₃(a·rΔ)                                    (dead zone, γ₃ = regularised γ(3, ·))
      + (σ²/2)·ρ(u)·exp(-a·rΔ)·(1 - exp(-2·u·M))       (granular cells)
      + exp(-a·T)·(σ² + sqrt(2)·σ·h + h²)              (overload)

Every term is a sum of positive parts: ρ(u) comes from its Taylor series for u ≤ 2 (where the
closed form cancels) and ``1 - exp(-x)`` from ``expm1``, so D keeps full relative accuracy up to
N = 2^16, where the expanded form of eq. 13 subtracts nearly equal numbers. For N = 8, σ = 1 the
midrise case is seed 001 eq. 14.

Variance mismatch (seed 000): ``xmax`` is in units of the design standard deviation (1) and
``sigma`` is the standard deviation of the data actually quantized.

Range policy: ``xmax`` finite and ≥ 0, ``sigma`` finite and > 0, else ``InvalidSpecError``
naming the value; results are float64 and stay finite while xmax/σ and σ lie within about
1e±100 (beyond, squares overflow and NumPy warns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from quantcore.design.brent import bounded_minimum
from quantcore.design.gamma3 import gamma3
from quantcore.errors import InvalidSpecError

ArrayLike = float | npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

MAX_LEVELS = 1 << 16
_SQRT2 = math.sqrt(2.0)
# Below this u the closed form of ρ(u) loses digits; the series (radius of convergence ∞)
# needs ~16 terms here for double precision.
_SERIES_LIMIT = 2.0
_TERMS = 18


def _series_coefficients() -> tuple[FloatArray, FloatArray]:
    """Coefficients, highest power first, of φ(u)/u³ and sinh(u)/u as polynomials in u²."""
    phi = [2 * m * (2 * m - 1) / math.factorial(2 * m + 1) for m in range(1, _TERMS + 1)]
    sinhc = [1.0 / math.factorial(2 * k + 1) for k in range(_TERMS)]
    return np.array(phi[::-1]), np.array(sinhc[::-1])


_PHI, _SINHC = _series_coefficients()


def _horner(coefficients: FloatArray, v: FloatArray) -> FloatArray:
    """``np.polyval(coefficients, v)`` for an array ``v``: the same products and sums in the
    same order, updated in place rather than in a new array per term."""
    y = np.zeros_like(v)
    for c in coefficients:
        y *= v
        y += c
    return y


def _rho_over_u2(u: FloatArray) -> FloatArray:
    """ρ(u)/u², with ρ(u) = u² + 2 - 2u·coth(u); equals 1/3 at u = 0 and tends to 1."""
    small = u <= _SERIES_LIMIT
    if np.ndim(u) and small.all():  # the usual case (fine steps): the closed form is unused
        v = np.square(u)
        return _horner(_PHI, v) / _horner(_SINHC, v)
    v = np.square(np.where(small, u, 0.0))
    series = np.polyval(_PHI, v) / np.polyval(_SINHC, v)
    big = np.where(small, 3.0, u)
    closed = 1.0 + (2.0 - 2.0 * big / np.tanh(big)) / np.square(big)
    return np.where(small, series, closed)


def check_levels(levels: int) -> int:
    """``levels`` as an int, or ``InvalidSpecError`` unless it is even and in 2..65536."""
    if isinstance(levels, bool) or not isinstance(levels, int | np.integer):
        raise InvalidSpecError(f"{levels=} must be a whole number of levels")
    if not 2 <= levels <= MAX_LEVELS or levels % 2:
        raise InvalidSpecError(f"{levels=} must be even and between 2 and {MAX_LEVELS}")
    return int(levels)


def _check_positive(name: str, value: FloatArray, *, allow_zero: bool) -> None:
    bad = ~np.isfinite(value) | (value < 0 if allow_zero else value <= 0)
    if np.any(bad):
        shown = value if value.ndim == 0 else value[bad][:3]
        kind = "non-negative" if allow_zero else "positive"
        raise InvalidSpecError(f"{name}={shown} must be finite and {kind}")


def _result(value: FloatArray) -> float | FloatArray:
    return float(value) if value.ndim == 0 else value


def _deadzone_family(
    step: FloatArray, count: int, ratio: float, sigma: FloatArray
) -> FloatArray:
    """D of the family in the module docstring (count = M positive levels)."""
    if count == 0:
        # No level but zero: the whole variance is error, whatever the step.
        return np.asarray(np.square(sigma) + np.zeros_like(step), dtype=np.float64)
    a = _SQRT2 / sigma
    h = 0.5 * step
    u = a * h
    var = np.square(sigma)
    dead = a * ratio * step
    top = a * (count + ratio) * step
    zero_cell = np.zeros_like(u)
    if ratio > 0:
        zero_cell = var * gamma3(dead)
    granular = (
        np.square(h) * _rho_over_u2(u) * (np.exp(-dead) if ratio > 0 else 1.0)  # exp(0) = 1
        * -np.expm1(-2.0 * u * count)
    )
    overload = np.exp(-top) * (var + _SQRT2 * sigma * h + np.square(h))
    return np.asarray(zero_cell + granular + overload, dtype=np.float64)


def _prepare(xmax: ArrayLike, sigma: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(xmax, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    _check_positive("xmax", x, allow_zero=True)
    _check_positive("sigma", s, allow_zero=False)
    return x, s


def laplacian_uniform_distortion(
    xmax: ArrayLike, levels: int, sigma: ArrayLike = 1.0
) -> float | FloatArray:
    """MSE of the N-level midrise quantizer with support [-xmax, xmax] on a Laplacian source.

    D = granular + overload as in the module docstring with r = 0, M = N/2, Δ = 2·xmax/N;
    for N = 8, σ = 1 this is seed 001 eq. 14. ``xmax`` and ``sigma`` broadcast (curves over
    thresholds or variances). Range: D lies in (0, σ² + xmax²/N²]; ``xmax = 0`` (every level at
    0) gives D = σ². ``levels`` must be even, 2..65536; ``xmax`` finite and ≥ 0; ``sigma`` > 0.
    """
    n = check_levels(levels)
    x, s = _prepare(xmax, sigma)
    return _result(_deadzone_family(2.0 * x / n, n // 2, 0.0, s))


def laplacian_midtread_distortion(
    xmax: ArrayLike, levels: int, sigma: ArrayLike = 1.0
) -> float | FloatArray:
    """MSE of the midtread quantizer with N-1 levels kΔ, |k| ≤ N/2-1, Δ = 2·xmax/(N-1).

    The outermost cell edge is xmax; the zero cell is [-Δ/2, Δ/2]. Module docstring form with
    r = 1/2, M = N/2 - 1. N = 2 leaves the single level 0, so D = σ² for every xmax, as it
    does for xmax = 0. Inputs as for ``laplacian_uniform_distortion``.
    """
    n = check_levels(levels)
    x, s = _prepare(xmax, sigma)
    return _result(_deadzone_family(2.0 * x / (n - 1), n // 2 - 1, 0.5, s))


def laplacian_deadzone_distortion(
    step: ArrayLike, *, max_index: int, ratio: float, sigma: ArrayLike = 1.0
) -> float | FloatArray:
    """MSE of the dead-zone quantizer of seed 004 table 4 on a Laplacian source.

    Codes ``X_q = 0`` for |x| < ratio·Δ, else ``sgn(x)·min(ceil(|x|/Δ - ratio), max_index)``,
    reconstructed at ``sgn·Δ·(X_q + ratio - 1/2)``; Δ = ``step``. ratio = 0 with max_index =
    N/2 is the midrise quantizer, ratio = 1/2 with max_index = N/2 - 1 the midtread one.
    ``step`` must be ≥ 0 (0 gives D = σ²), ``ratio`` in [0, 1], ``max_index`` in 0..32768
    (0 leaves only the level 0: D = σ²).
    """
    if not 0 <= max_index <= MAX_LEVELS // 2:
        raise InvalidSpecError(f"{max_index=} must be between 0 and {MAX_LEVELS // 2}")
    if not (math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        raise InvalidSpecError(f"{ratio=} must be between 0 and 1")
    d, s = _prepare(step, sigma)
    return _result(_deadzone_family(d, int(max_index), float(ratio), s))


def laplacian_deadzone_sqnr_db(
    xmax: ArrayLike, levels: int, ratio: float, sigma: ArrayLike = 1.0
) -> float | FloatArray:
    """SQNR of the N-code dead-zone quantizer whose top cell edge is xmax.

    The convention of ``quantcore.quantizers.deadzone``: M = N/2 - 1 levels a side plus zero
    for ratio > 0, M = N/2 for ratio = 0, and Δ = xmax/(M + ratio), so ratio 0 is the
    midrise quantizer and ratio 1/2 the midtread one. D from
    ``laplacian_deadzone_distortion``; inputs as for ``laplacian_uniform_distortion``.
    """
    n = check_levels(levels)
    x, s = _prepare(xmax, sigma)
    count = n // 2 if ratio == 0 else n // 2 - 1
    step = x / (count + ratio) if count + ratio > 0 else np.zeros_like(x)
    distortion = laplacian_deadzone_distortion(step, max_index=count, ratio=ratio, sigma=s)
    return sqnr_db(s, distortion)


def sqnr_db(sigma: ArrayLike, distortion: ArrayLike) -> float | FloatArray:
    """10·log10(σ²/D) (seed 001 eq. 15)."""
    value = 10.0 * np.log10(np.square(np.asarray(sigma, np.float64)) / np.asarray(distortion))
    return _result(np.asarray(value))


def laplacian_uniform_sqnr_db(
    xmax: ArrayLike, levels: int, sigma: ArrayLike = 1.0
) -> float | FloatArray:
    """SQNR = 10·log10(σ²/D) of the midrise quantizer (seed 001 eq. 15); D as documented."""
    return sqnr_db(sigma, laplacian_uniform_distortion(xmax, levels, sigma))


def laplacian_midtread_sqnr_db(
    xmax: ArrayLike, levels: int, sigma: ArrayLike = 1.0
) -> float | FloatArray:
    """SQNR = 10·log10(σ²/D) of the midtread quantizer; 0 dB for N = 2 (one level, zero)."""
    return sqnr_db(sigma, laplacian_midtread_distortion(xmax, levels, sigma))


def hui_xmax(levels: int) -> float:
    """sqrt(2)·ln N: Hui's asymptotically optimal threshold, unit-variance Laplacian (eq. 6)."""
    return _SQRT2 * math.log(check_levels(levels))


def _jayant_bracket(levels: int) -> tuple[float, float]:
    """A bracket that holds the optimum for every N: it grows with ln N like Hui's rule."""
    hui = _SQRT2 * math.log(levels)
    return 0.5 * hui, 2.0 * hui + 1.0


@lru_cache(maxsize=64)
def mse_optimal_xmax(levels: int) -> float:
    """The threshold minimising the midrise MSE for a unit-variance Laplacian, unrounded.

    Bounded Brent minimisation of ``log D(xmax)`` (unimodal in xmax) on
    [sqrt(2)·ln N / 2, 2·sqrt(2)·ln N + 1]; D is flat at its minimum, so in double
    precision the threshold is pinned to about 1e-8 relative (``iterative_xmax``, a root of
    the optimality condition, is sharper). N = 2 has the closed form
    xmax = sqrt(2) (the level E|x| = 1/sqrt(2) sits at xmax/2). Gives 2.174785 for N = 4 and
    2.923733 for N = 8. Cached per N: called once per layer or channel.
    """
    n = check_levels(levels)
    if n == 2:
        return _SQRT2
    lo, hi = _jayant_bracket(n)
    found = bounded_minimum(lambda x: math.log(float(laplacian_uniform_distortion(x, n))),
                            (lo, hi), xatol=1e-12, maxiter=500)  # fmt: skip
    return float(found.x)


# Jayant and Noll tabulate the optimal step to four decimals for small N, and the papers quote
# those values (seed 001: xmax = 4 x 0.7309 = 2.9236 at 3 bits); up to here the rounded step
# still has four significant digits.
JAYANT_TABLE_MAX_BITS = 5


def jayant_xmax(levels: int) -> float:
    """Jayant's MSE-optimal threshold for a unit-variance Laplacian, as the papers quote it.

    Up to ``JAYANT_TABLE_MAX_BITS`` it is N/2 times the optimal step Δ = 2·xmax/N rounded to
    four decimals, as tabulated: 1.4142 for N = 2, 2.1748 for N = 4, 2.9236 for N = 8 (the
    unrounded optimum, ``mse_optimal_xmax``, is 2.923733; the SQNR differs by < 1e-7 dB).
    For larger N, where four decimals of Δ would lose precision, the unrounded optimum.
    """
    n = check_levels(levels)
    optimum = mse_optimal_xmax(n)
    if n > 1 << JAYANT_TABLE_MAX_BITS:
        return optimum
    return n / 2 * round(2 * optimum / n, 4)


@dataclass(frozen=True, kw_only=True)
class IterativeDesign:
    """Result of ``iterative_xmax``: the threshold, its distortion and how it was reached."""

    levels: int
    xmax: float
    distortion: float
    iterations: int
    converged: bool


def lloyd_step(xmax: float, levels: int) -> float:
    """One step of the iterative design rule: the best xmax for the cells that xmax defines.

    Unit-variance Laplacian, midrise levels (i - 1/2)Δ. With the partition of Δ = 2·xmax/N
    held fixed, D is a quadratic in the step whose minimum is
    Δ' = Σ (i-1/2)·∫_i x p(x) dx / Σ (i-1/2)²·∫_i p(x) dx over the cells
    i = [(i-1)Δ, iΔ), the last one open to infinity; the step returns N·Δ'/2. It never raises
    D, and its fixed point is where dD/dxmax = 0.
    """
    n = check_levels(levels)
    step = 2.0 * float(xmax) / n
    if not (math.isfinite(step) and step > 0):
        raise InvalidSpecError(f"{xmax=} must be finite and positive")
    a = _SQRT2
    lower = step * np.arange(n // 2, dtype=np.float64)
    weight = lower / step + 0.5
    tail = np.exp(-a * lower)
    inside = -np.expm1(-a * step)
    prob = tail * inside
    first = tail * ((lower + 1.0 / a) * inside - step * math.exp(-a * step))
    prob[-1] = tail[-1]
    first[-1] = tail[-1] * (lower[-1] + 1.0 / a)
    return float(np.dot(weight, first) / np.dot(weight * weight, prob)) * n / 2.0


def iterative_xmax(levels: int, *, xtol: float = 1e-13, max_iter: int = 200) -> IterativeDesign:
    """Design the midrise quantizer for a unit-variance Laplacian by the iterative MSE rule.

    Seed 000's iterative minimal-MSE design, derived here from first principles (the seed
    text holds only the abstract): ``lloyd_step`` alternates the cell partition and the best
    step for it, and the design is its fixed point. Plain repetition contracts ever more
    slowly as N grows (g'(x*) = 1 - 3e-7 at N = 65536), so the fixed point is solved as the
    root of lloyd_step(x) - x by Brent's method on the bracket of ``mse_optimal_xmax`` (the
    step moves up below the optimum and down above it). It agrees with ``mse_optimal_xmax``
    (found by minimising D instead) to about 1e-8 relative; ``iterations`` counts rule
    evaluations.
    """
    from scipy.optimize import brentq  # lazy: SciPy costs ~1 s to import
    n = check_levels(levels)
    if n == 2:
        # One cell per side: the rule gives sqrt(2) from any start in a single step.
        xmax = lloyd_step(1.0, n)
        return IterativeDesign(
            levels=n, xmax=xmax, distortion=float(laplacian_uniform_distortion(xmax, n)),
            iterations=1, converged=True,
        )
    lo, hi = _jayant_bracket(n)
    xmax, info = brentq(
        lambda x: lloyd_step(x, n) - x, lo, hi, xtol=xtol, maxiter=max_iter,
        full_output=True, disp=False,
    )
    return IterativeDesign(
        levels=n,
        xmax=float(xmax),
        distortion=float(laplacian_uniform_distortion(xmax, n)),
        iterations=int(info.function_calls),
        converged=bool(info.converged),
    )
