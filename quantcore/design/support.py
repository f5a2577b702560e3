"""The support-region threshold xmax for each ``support`` choice of the API.

Every choice returns xmax in normalised units (standard deviations of the group being
quantized): the quantizer covers [-xmax, xmax] and maps larger magnitudes to its outermost
levels. The weights handed in are already normalised; they may be large (tens of millions of
values), so the data-driven choices read them in O(n) passes (min, max) without copying, and
only ``percentile`` makes one temporary copy (|w|, partitioned in place).

Constant tensors: after normalisation every weight is 0, so wmax, |wmin|, max|w|, any
percentile and the MSE-optimal threshold are all 0, which no quantizer can use. These
choices then fall back to ``jayant_xmax(levels)``, the threshold for a unit-variance
Laplacian; the weights are reproduced exactly anyway (they all sit at 0 or the mean).
``SupportChoice.fallback`` says when that happened.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcore.design.brent import bounded_minimum
from quantcore.design.theory import check_levels, hui_xmax, jayant_xmax
from quantcore.errors import InvalidSpecError, InvalidTensorError
from quantcore.spec import Support

ErrorAt = Callable[[float], float]

# The MSE search: a geometric grid over [max|w|·_MSE_LOW, max|w|] (ratio ~1.19 between
# points), then bounded Brent refinement between the neighbours of the best grid point.
_MSE_GRID = 40
_MSE_LOW = 1e-3
_MSE_RTOL = 1e-4


@dataclass(frozen=True, kw_only=True)
class SupportChoice:
    """A resolved support threshold: xmax (normalised units), the rule and whether the
    constant-tensor fallback (``jayant_xmax``) replaced a data-driven value of 0."""

    xmax: float
    support: Support
    fallback: bool = False


def support_threshold(
    support: Support | str,
    *,
    levels: int,
    normalized: npt.ArrayLike,
    value: float | None = None,
    error_at: ErrorAt | None = None,
) -> float:
    """xmax for ``support`` on the normalised weights ``normalized`` (any shape).

    See ``choose_support`` for each rule; this returns its ``xmax``.
    """
    return choose_support(
        support, levels=levels, normalized=normalized, value=value, error_at=error_at
    ).xmax


def choose_support(
    support: Support | str,
    *,
    levels: int,
    normalized: npt.ArrayLike,
    value: float | None = None,
    error_at: ErrorAt | None = None,
) -> SupportChoice:
    """Resolve ``support`` to a threshold, in standard deviations of the normalised weights.

    - ``wmax``: the largest weight; if no weight is positive, |wmin| instead.
    - ``abs_wmin``: |smallest weight|; if no weight is negative, wmax instead.
    - ``max_abs``: max |w|.
    - ``hui``: sqrt(2)·ln N; ``jayant``: ``jayant_xmax(N)``, as the papers quote it; the weights
      are only checked to be non-empty.
    - ``mse``: the xmax minimising ``error_at(xmax)``, the measured MSE of the caller's
      quantizer at that threshold (the caller decides which weights it measures, e.g. a
      subsample of a huge tensor). A 40-point geometric grid over [max|w|/1000, max|w|],
      then bounded Brent refinement between the best point's neighbours, located to 1e-4
      relative; the best value seen is returned.
    - ``percentile``: the ``value``-th percentile (0 < value ≤ 100) of |w|, linear
      interpolation between order statistics as ``numpy.percentile`` does.
    - ``value``: ``value`` as given (finite, > 0).

    Data-driven choices that give 0 (a constant tensor) fall back to ``jayant_xmax(N)``.
    Raises ``InvalidTensorError`` for an empty array or NaN/Inf among the weights read,
    ``InvalidSpecError`` for an unknown support, bad ``levels``, a missing or invalid
    ``value`` (named ``support_value``, the API's field) or ``mse`` without ``error_at``.
    """
    try:
        rule = Support(support)
    except ValueError:
        allowed = ", ".join(s.value for s in Support)
        raise InvalidSpecError(f"support={support!r} is not one of: {allowed}") from None
    n = check_levels(levels)
    weights = np.asarray(normalized)
    if weights.size == 0:
        raise InvalidTensorError(f"normalized weights are empty (shape {weights.shape})")

    if rule is Support.HUI:
        return SupportChoice(xmax=hui_xmax(n), support=rule)
    if rule is Support.JAYANT:
        return SupportChoice(xmax=jayant_xmax(n), support=rule)
    if rule is Support.VALUE:
        return SupportChoice(xmax=_support_value(rule, value, 0.0, math.inf), support=rule)

    low, high = _extremes(weights)
    if rule is Support.WMAX:
        xmax = high if high > 0 else -low
    elif rule is Support.ABS_WMIN:
        xmax = -low if low < 0 else high
    elif rule is Support.MAX_ABS:
        xmax = max(high, -low)
    elif rule is Support.PERCENTILE:
        xmax = _abs_percentile(weights, _support_value(rule, value, 0.0, 100.0))
    else:
        if error_at is None:
            raise InvalidSpecError("support='mse' needs error_at, the measured MSE at xmax")
        top = max(high, -low)
        xmax = _mse_search(error_at, top) if top > 0 else 0.0
    if xmax > 0:
        return SupportChoice(xmax=float(xmax), support=rule)
    return SupportChoice(xmax=jayant_xmax(n), support=rule, fallback=True)


def _support_value(rule: Support, value: float | None, lo: float, hi: float) -> float:
    """``value`` checked to be finite with lo < value ≤ hi."""
    if value is None:
        raise InvalidSpecError(f"support_value is required for support={rule.value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise InvalidSpecError(f"support_value={value!r} must be a number")
    v = float(value)
    if not (math.isfinite(v) and lo < v <= hi):
        upper = "" if math.isinf(hi) else f" and at most {hi:g}"
        raise InvalidSpecError(
            f"support_value={value!r} must be greater than {lo:g}{upper} "
            f"for support={rule.value!r}"
        )
    return v


def _extremes(weights: npt.NDArray[np.generic]) -> tuple[float, float]:
    """(min, max) of the weights in two passes without a copy; NaN or Inf is refused."""
    low, high = float(np.min(weights)), float(np.max(weights))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InvalidTensorError(
            f"normalized weights hold NaN or Inf (min={low}, max={high})"
        )
    return low, high


def _abs_percentile(weights: npt.NDArray[np.generic], q: float) -> float:
    """The q-th percentile of |w| ('linear' rule of numpy.percentile), one temporary copy.

    |w| goes into one buffer (float32 for half/single inputs, float64 for double), which is
    partitioned in place at the two order statistics around rank (n - 1)·q/100.
    """
    dtype = np.result_type(weights.dtype, np.float32)
    buffer = np.empty(weights.shape, dtype=dtype)
    np.abs(weights, out=buffer)
    flat = buffer.reshape(-1)
    rank = (flat.size - 1) * (q / 100.0)
    below = math.floor(rank)
    above = min(below + 1, flat.size - 1)
    flat.partition((below, above) if above != below else below)
    a, b = float(flat[below]), float(flat[above])
    frac = rank - below
    # numpy's lerp: exact at both ends, a + (b - a)·t below the middle, b - (b - a)·(1 - t) above.
    return a + (b - a) * frac if frac < 0.5 else b - (b - a) * (1.0 - frac)


def _mse_search(error_at: ErrorAt, top: float) -> float:
    """argmin of error_at over (0, top]: geometric grid, then Brent between neighbours."""
    grid = np.geomspace(top * _MSE_LOW, top, _MSE_GRID)
    errors = [_measured(error_at, float(x)) for x in grid]
    k = int(np.argmin(errors))
    best_x, best_e = float(grid[k]), errors[k]
    lo = float(grid[max(k - 1, 0)])
    hi = float(grid[min(k + 1, _MSE_GRID - 1)])
    found = bounded_minimum(lambda x: _measured(error_at, float(x)), (lo, hi),
                            xatol=_MSE_RTOL * best_x)  # fmt: skip
    if found.fun < best_e:
        best_x = float(found.x)
    return best_x


def _measured(error_at: ErrorAt, xmax: float) -> float:
    error = float(error_at(xmax))
    if not math.isfinite(error) or error < 0:
        raise InvalidTensorError(f"measured MSE {error} at {xmax=} is not a finite error")
    return error
