"""Brent's bounded minimisation of a function of one variable (golden sections and parabolic
steps), step for step SciPy's ``minimize_scalar(method="bounded")``: the same points measured
in the same order, so the same minimum to the last bit, without SciPy's import (0.3 s or
more), which the support searches, the bit-rate designs and the exponential quantizer
otherwise paid on a job's path.

``bounded_search`` is the method as a generator (the caller measures each point it yields:
``support_rows`` drives one a row in lockstep, and ``brent_rows`` compiles its steps);
``bounded_minimum`` drives it on a function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

MAXFUN = 500  # SciPy's default for the bounded method
SQRT_EPS = math.sqrt(2.2e-16)
GOLDEN = 0.5 * (3.0 - math.sqrt(5.0))

Search = Generator[float, float, tuple[float, float]]


def bounded_search(a: float, b: float, xatol: float, maxfun: int = MAXFUN) -> Search:
    """SciPy's ``_minimize_scalar_bounded`` as a generator: yields each point to measure,
    is sent its value, returns ``(x, f(x))`` of the best point (same arithmetic, same order),
    stopping after ``maxfun`` measurements."""
    fulc = a + GOLDEN * (b - a)
    nfc = xf = fulc
    rat = e = 0.0
    fx = yield xf
    num = 1
    ffulc = fnfc = fx
    xm = 0.5 * (a + b)
    tol1 = SQRT_EPS * abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    while abs(xf - xm) > (tol2 - 0.5 * (b - a)):
        golden = True
        if abs(e) > tol1:
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
                    rat = tol1 * (float(np.sign(xm - xf)) + ((xm - xf) == 0))
            else:
                golden = True
        if golden:
            e = (a - xf) if xf >= xm else (b - xf)
            rat = GOLDEN * e
        x = xf + (float(np.sign(rat)) + (rat == 0)) * max(abs(rat), tol1)
        fu = yield x
        num += 1
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
            elif fu <= ffulc or fulc in (xf, nfc):
                fulc, ffulc = x, fu
        xm = 0.5 * (a + b)
        tol1 = SQRT_EPS * abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
        if num >= maxfun:
            break
    return xf, fx


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
    maxiter: int = MAXFUN,
) -> Minimum:
    """The minimum of ``func`` on ``bounds`` to ``xatol`` (SciPy's defaults)."""
    a, b = (float(v) for v in bounds)
    if not (math.isfinite(a) and math.isfinite(b)) or a > b:
        raise ValueError(f"bounds {bounds} must be finite, the lower first")
    search = bounded_search(a, b, xatol, maxiter)
    x, evaluations = next(search), 0
    while True:
        fu = func(x)
        evaluations += 1
        try:
            x = search.send(fu)
        except StopIteration as done:
            xf, fx = done.value
            break
    # The search stops early only once a step past the first has reached ``maxiter``.
    capped = evaluations > 1 and evaluations >= maxiter
    nan = math.isnan(xf) or math.isnan(fx) or math.isnan(fu)
    return Minimum(x=xf, fun=fx, success=not (capped or nan), evaluations=evaluations)
