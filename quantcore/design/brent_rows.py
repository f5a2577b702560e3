"""The bounded Brent search of every row at once, compiled (``support_rows``' lockstep).

``bounded_search`` in ``quantcore.design.brent`` is SciPy's
``minimize_scalar(method="bounded")`` as a generator; driving thousands of them from Python,
one a row, costs more than measuring their points. ``BrentRows`` keeps every row's search state in
arrays and ``_advance`` runs the same steps in the same IEEE arithmetic, row by row, between
two batched measurements: the points asked for, and the results, are the generator's, bit for
bit (the tests drive both on the same functions).
"""

from __future__ import annotations

import numpy as np

from quantcore.design.brent import GOLDEN, MAXFUN, SQRT_EPS
from quantcore.jit import njit

_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")

# Columns of the float state, one row per search.
A, B, XF, FX, NFC, FNFC, FULC, FFULC, E, RAT, XATOL, X = range(12)
_WAITING, _FIRST, _DONE = 0, 1, 2


@_jit
def _sign(v):  # float(np.sign(v))
    if v > 0:
        return 1.0
    if v < 0:
        return -1.0
    return v  # 0.0, or NaN


@_jit
def _propose(s):
    """The loop's test and next point of one search (``s``: its state); False: it ends."""
    a, b, xf = s[A], s[B], s[XF]
    xm = 0.5 * (a + b)
    tol1 = SQRT_EPS * abs(xf) + s[XATOL] / 3.0
    tol2 = 2.0 * tol1
    if not abs(xf - xm) > (tol2 - 0.5 * (b - a)):
        return False
    golden = True
    rat, e = s[RAT], s[E]
    if abs(e) > tol1:
        golden = False
        fx, nfc, fulc = s[FX], s[NFC], s[FULC]
        r = (xf - nfc) * (fx - s[FFULC])
        q = (xf - fulc) * (fx - s[FNFC])
        p = (xf - fulc) * q - (xf - nfc) * r
        q = 2.0 * (q - r)
        if q > 0.0:
            p = -p
        q = abs(q)
        r = e
        e = rat
        if abs(p) < abs(0.5 * q * r) and p > q * (a - xf) and p < q * (b - xf):
            rat = (p + 0.0) / q
            x = xf + rat
            if (x - a) < tol2 or (b - x) < tol2:
                rat = tol1 * (_sign(xm - xf) + (1.0 if (xm - xf) == 0 else 0.0))
        else:
            golden = True
    if golden:
        e = (a - xf) if xf >= xm else (b - xf)
        rat = GOLDEN * e
    s[RAT], s[E] = rat, e
    s[X] = xf + (_sign(rat) + (1.0 if rat == 0 else 0.0)) * max(abs(rat), tol1)
    return True


@_jit
def _take(s, fu):
    """The generator's update after ``fu = yield x``."""
    x, xf, fx = s[X], s[XF], s[FX]
    if fu <= fx:
        if x >= xf:
            s[A] = xf
        else:
            s[B] = xf
        s[FULC], s[FFULC] = s[NFC], s[FNFC]
        s[NFC], s[FNFC] = xf, fx
        s[XF], s[FX] = x, fu
    else:
        if x < xf:
            s[A] = x
        else:
            s[B] = x
        if fu <= s[FNFC] or s[NFC] == xf:
            s[FULC], s[FFULC] = s[NFC], s[FNFC]
            s[NFC], s[FNFC] = x, fu
        elif fu <= s[FFULC] or s[FULC] == xf or s[FULC] == s[NFC]:
            s[FULC], s[FFULC] = x, fu


@_jit
def _advance(state, phase, num, which, values):
    """Give row ``which[k]`` its measured ``values[k]``; each asks for its next point or ends."""
    for k in range(which.size):
        i = which[k]
        s = state[i]
        if phase[i] == _FIRST:
            s[FX] = s[FFULC] = s[FNFC] = values[k]
            num[i] = 1
        else:
            num[i] += 1
            _take(s, values[k])
            if num[i] >= MAXFUN:
                phase[i] = _DONE
                continue
        phase[i] = _WAITING if _propose(s) else _DONE


class BrentRows:
    """Bounded Brent searches on ``[lower, upper]`` with tolerances ``xatol``, one per row."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, xatol: np.ndarray) -> None:
        self.state = np.zeros((lower.size, 12))
        s = self.state
        s[:, A], s[:, B], s[:, XATOL] = lower, upper, xatol
        s[:, XF] = s[:, NFC] = s[:, FULC] = s[:, X] = lower + GOLDEN * (upper - lower)
        self.phase = np.full(lower.size, _FIRST, np.int8)
        self.num = np.zeros(lower.size, np.int64)

    def pending(self) -> np.ndarray:
        """The searches waiting for a measurement, in order."""
        return np.flatnonzero(self.phase != _DONE)

    def points(self, which: np.ndarray) -> np.ndarray:
        return self.state[which, X]

    def give(self, which: np.ndarray, values: np.ndarray) -> None:
        _advance(self.state, self.phase, self.num, which, np.asarray(values, np.float64))

    def best(self) -> tuple[np.ndarray, np.ndarray]:
        """Each search's ``(x, f(x))``, once all are done."""
        return self.state[:, XF].copy(), self.state[:, FX].copy()
