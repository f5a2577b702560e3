"""Cumulative distribution functions of the fitted families, in closed form (NumPy and math).

``fits`` evaluates a CDF only at a histogram's bin edges (a few hundred points), so these are
written for clarity over speed and need no SciPy: importing ``scipy.stats`` costs over a
second, more than a whole quantize job of a mid-sized model. Each takes standardised values
``z = (x - loc) / scale`` and matches ``scipy.stats`` to ~1e-14 (``tests/core/design``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Cdf = Callable[[Floats], Floats]

_SQRT2 = math.sqrt(2.0)


def _each(fn: Callable[[float], float], z: Floats) -> Floats:
    return np.array([fn(float(v)) for v in np.ravel(z)], np.float64).reshape(np.shape(z))


def normal(z: Floats) -> Floats:
    return _each(lambda v: 0.5 * math.erfc(-v / _SQRT2), z)


def laplace(z: Floats) -> Floats:
    return np.where(z > 0, 1.0 - 0.5 * np.exp(-np.abs(z)), 0.5 * np.exp(-np.abs(z)))


def logistic(z: Floats) -> Floats:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def cauchy(z: Floats) -> Floats:
    return 0.5 + np.arctan(z) / math.pi


def uniform(z: Floats) -> Floats:
    return np.clip(z, 0.0, 1.0)


def exponential(z: Floats) -> Floats:
    return np.where(z > 0, -np.expm1(-np.maximum(z, 0.0)), 0.0)


def regularized_gamma(a: float, x: float) -> float:
    """P(a, x), the regularized lower incomplete gamma function (series below a + 1, Lentz's
    continued fraction above: Numerical Recipes' gammp)."""
    if x <= 0.0:
        return 0.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1.0
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return min(1.0, total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return max(0.0, 1.0 - math.exp(log_front) * h)


def gamma(shape: float) -> Cdf:
    return lambda z: _each(lambda v: regularized_gamma(shape, v), z)


def alpha(shape: float) -> Cdf:
    """``Φ(a - 1/z) / Φ(a)`` for z > 0 (SciPy's alpha distribution), 0 elsewhere."""
    norm = 0.5 * math.erfc(-shape / _SQRT2)
    return lambda z: _each(
        lambda v: 0.5 * math.erfc(-(shape - 1.0 / v) / _SQRT2) / norm if v > 0 else 0.0, z
    )
