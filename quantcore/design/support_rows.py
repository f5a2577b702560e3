"""``choose_support`` for every row of a sample at once (per-channel thresholds).

The rules are those of ``quantcore.design.support``, with the same results row by row:

- ``percentile``: every row's two order statistics from one ``np.partition`` along the rows,
  then NumPy's linear interpolation, vectorised;
- ``mse``: each row's 40-point grid measured in one batch, then each row's bounded Brent
  refinement (SciPy's ``minimize_scalar(method="bounded")``, step for step) run in lockstep:
  every round measures the next point of every row still searching in one batch, and the
  steps between two rounds run compiled for all rows (``quantcore.design.brent_rows``; a
  generator per row, ``brent.bounded_search``, is the reference). ``errors_at(xmax, rows)``
  measures a batch (``quantcore.quantizers.measure``), so the search costs a few passes over
  the sample instead of ~55 calls per row;
- the extreme-based rules from each row's min and max, the data-free ones once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from quantcore.design.brent import bounded_search
from quantcore.design.support import (
    _MSE_GRID,
    _MSE_LOW,
    _MSE_RTOL,
    SupportChoice,
    _support_value,
    choose_support,
)
from quantcore.design.theory import check_levels, jayant_xmax
from quantcore.errors import InvalidSpecError, InvalidTensorError
from quantcore.spec import Support

ErrorsAt = Callable[[npt.NDArray[np.float64], npt.NDArray[np.int64]], npt.NDArray[np.float64]]
# False: the Brent steps run as one generator per row (the reference of the compiled ones).
COMPILED_BRENT = True


def _measured(errors_at: ErrorsAt, xmax: np.ndarray, rows: np.ndarray) -> np.ndarray:
    errors = np.asarray(errors_at(xmax, rows), np.float64)
    bad = ~np.isfinite(errors) | (errors < 0)
    if bad.any():
        at = int(np.argmax(bad))
        raise InvalidTensorError(
            f"measured MSE {errors[at]} at xmax={float(xmax[at])} is not a finite error"
        )
    return errors


def _mse_rows(errors_at: ErrorsAt, tops: np.ndarray) -> np.ndarray:
    """Each row's argmin over (0, top]: its grid, then its Brent refinement, in lockstep."""
    rows = np.flatnonzero(tops > 0)
    found = np.zeros(tops.size)
    if rows.size == 0:
        return found
    # One geomspace for all rows: elementwise, so each row is its own call's grid, bit for bit.
    grids = np.geomspace(tops[rows] * _MSE_LOW, tops[rows], _MSE_GRID, axis=1)
    errors = _measured(errors_at, grids.reshape(-1), np.repeat(rows, _MSE_GRID))
    errors = errors.reshape(rows.size, _MSE_GRID)
    best = np.argmin(errors, axis=1)
    at = np.arange(rows.size)
    best_x, best_e = grids[at, best], errors[at, best]
    lower = grids[at, np.maximum(best - 1, 0)]
    upper = grids[at, np.minimum(best + 1, _MSE_GRID - 1)]
    xatol = _MSE_RTOL * best_x
    if COMPILED_BRENT:
        x, fx = _compiled_searches(errors_at, rows, lower, upper, xatol)
    else:
        x, fx = _generator_searches(errors_at, rows, lower, upper, xatol)
    better = fx < best_e
    best_x[better] = x[better]
    found[rows] = best_x
    return found


def _compiled_searches(
    errors_at: ErrorsAt, rows: np.ndarray, lower: np.ndarray, upper: np.ndarray,
    xatol: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every row's Brent search in lockstep, its steps compiled (``BrentRows``)."""
    from quantcore.design.brent_rows import BrentRows  # numba loads with the first search

    searches = BrentRows(lower, upper, xatol)
    while (which := searches.pending()).size:
        searches.give(which, _measured(errors_at, searches.points(which), rows[which]))
    return searches.best()


def _generator_searches(
    errors_at: ErrorsAt, rows: np.ndarray, lower: np.ndarray, upper: np.ndarray,
    xatol: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The same searches driven as one ``bounded_search`` generator per row (the reference)."""
    searches = [bounded_search(float(lower[i]), float(upper[i]), float(xatol[i]))
                for i in range(rows.size)]  # fmt: skip
    x, fx = np.zeros(rows.size), np.zeros(rows.size)
    pending = {i: next(s) for i, s in enumerate(searches)}
    while pending:
        order = list(pending)
        values = _measured(errors_at, np.array([pending[i] for i in order]), rows[order])
        for i, value in zip(order, values, strict=True):
            try:
                pending[i] = searches[i].send(float(value))
            except StopIteration as done:
                del pending[i]
                x[i], fx[i] = done.value
    return x, fx


def _abs_percentile_rows(rows: np.ndarray, q: float) -> np.ndarray:
    """``_abs_percentile`` of each row (the 'linear' rule), one partition for all rows."""
    flat = np.abs(rows.astype(np.result_type(rows.dtype, np.float32)))
    n = flat.shape[1]
    rank = (n - 1) * (q / 100.0)
    below = math.floor(rank)
    above = min(below + 1, n - 1)
    flat.partition((below, above) if above != below else below, axis=1)
    a, b = flat[:, below].astype(np.float64), flat[:, above].astype(np.float64)
    frac = rank - below
    return a + (b - a) * frac if frac < 0.5 else b - (b - a) * (1.0 - frac)


def choose_support_rows(
    support: Support, *, levels: int, rows: np.ndarray, value: float | None = None,
    errors_at: ErrorsAt | None = None,
) -> list[SupportChoice]:
    """``choose_support`` of each row of ``rows`` (rows × k, normalised weights)."""
    n = check_levels(levels)
    if rows.ndim != 2 or rows.size == 0:
        raise InvalidTensorError(f"normalized weights are empty (shape {rows.shape})")
    if support in (Support.HUI, Support.JAYANT, Support.VALUE):
        one = choose_support(support, levels=levels, normalized=rows[0], value=value)
        return [one] * rows.shape[0]
    low, high = rows.min(axis=1).astype(np.float64), rows.max(axis=1).astype(np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise InvalidTensorError("normalized weights hold NaN or Inf")
    if support is Support.WMAX:
        xmax = np.where(high > 0, high, -low)
    elif support is Support.ABS_WMIN:
        xmax = np.where(low < 0, -low, high)
    elif support is Support.MAX_ABS:
        xmax = np.maximum(high, -low)
    elif support is Support.PERCENTILE:
        xmax = _abs_percentile_rows(rows, _support_value(support, value, 0.0, 100.0))
    else:
        if errors_at is None:
            raise InvalidSpecError("support='mse' needs error_at, the measured MSE at xmax")
        xmax = _mse_rows(errors_at, np.maximum(high, -low))
    fallback = jayant_xmax(n)
    return [SupportChoice(xmax=float(x), support=support) if x > 0 else
            SupportChoice(xmax=fallback, support=support, fallback=True) for x in xmax]  # fmt: skip
