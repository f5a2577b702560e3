"""Brent's bounded minimisation of a function of one variable (golden sections and parabolic
steps), step for step SciPy's ``minimize_scalar(method="bounded")``: the same points
evaluated in the same order, so the same minimum to the last bit, without SciPy's import
(0.3 s or more), which the support searches, the bit-rate designs and the exponential
quantizer otherwise paid on a job's path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_SQRT_EPS = math.sqrt(2.2e-16)
_GOLDEN = 0.5 * (3.0 - math.sqrt(5.0))


@dataclass(frozen=True)
class Minimum:
    """Where ``bounded_minimum`` stopped: ``x``, ``fun`` there, and whether it converged
    within its evaluations (``success``; False also for a NaN)."""

    x: float
    fun: float
    success: bool
    evaluations: int


def bounded_minimum(
    func: Callable[[float], float], bounds: tuple[float, float], *, xatol: float = 1e-5,
    maxiter: int = 500,
) -> Minimum:
    """The minimum of ``func`` on ``bounds`` to ``xatol`` (SciPy's defaults)."""
    a, b = (float(v) for v in bounds)
    if not (math.isfinite(a) and math.isfinite(b)) or a > b:
        raise ValueError(f"bounds {bounds} must be finite, the lower first")
    fulc = a + _GOLDEN * (b - a)
    nfc = xf = x = fulc
    rat = e = 0.0
    fx = func(x)
    evaluations = 1
    fu = math.inf
    ffulc = fnfc = fx
    xm = 0.5 * (a + b)
    tol1 = _SQRT_EPS * abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    converged = True
    while abs(xf - xm) > (tol2 - 0.5 * (b - a)):
        golden = True
        if abs(e) > tol1:  # a parabola through the three best points
            golden = False
            r = (xf - nfc) * (fx - ffulc)
            q = (xf - fulc) * (fx - fnfc)
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
                    rat = tol1 * _sign(xm - xf)
            else:
                golden = True
        if golden:
            e = (a - xf) if xf >= xm else (b - xf)
            rat = _GOLDEN * e
        x = xf + _sign(rat) * max(abs(rat), tol1)
        fu = func(x)
        evaluations += 1
        if fu <= fx:
            if x >= xf:
                a = xf
            else:
                b = xf
            fulc, ffulc = nfc, fnfc
            nfc, fnfc = xf, fx
            xf, fx = x, fu
        else:
            if x < xf:
                a = x
            else:
                b = x
            if fu <= fnfc or nfc == xf:
                fulc, ffulc = nfc, fnfc
                nfc, fnfc = x, fu
            elif fu <= ffulc or fulc == xf or fulc == nfc:  # noqa: SIM109 (``in`` matches NaN)
                fulc, ffulc = x, fu
        xm = 0.5 * (a + b)
        tol1 = _SQRT_EPS * abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
        if evaluations >= maxiter:
            converged = False
            break
    if math.isnan(xf) or math.isnan(fx) or math.isnan(fu):
        converged = False
    return Minimum(x=xf, fun=fx, success=converged, evaluations=evaluations)


def _sign(value: float) -> float:
    """1 for a positive or zero ``value``, -1 for a negative one (NaN stays NaN), as SciPy's
    ``np.sign(v) + (v == 0)``."""
    return float(np.sign(value)) + (value == 0)
