"""The Laplacian closed forms of ``quantcore.design.theory`` for a group of weights given its
extremes: a group has no weight beyond its own largest, so a grid spanning the group's range
overloads nothing, where the unrestricted Laplacian charges it the tail beyond.
"""

from __future__ import annotations

import math

import numpy as np

from quantcore.design.theory import (
    FloatArray,
    laplacian_midtread_distortion,
    laplacian_uniform_distortion,
)

SQRT2 = math.sqrt(2.0)


def within_reach(
    distortion: FloatArray, xmax: FloatArray, step: FloatArray, reach: FloatArray
) -> FloatArray:
    """``distortion``, the D on the unit-variance Laplacian of a quantizer with support
    ``xmax``, step ``step`` and outermost level ``xmax - step/2`` (midrise and midtread), when
    the source is that Laplacian restricted to ``|x| ≤ reach`` (``reach ≥ xmax``).

    The overload integral stops at ``reach``: beyond it the term above leaves
    ``exp(-a·reach)·(g² + sqrt(2)·g + 1)``, ``g = reach - xmax + step/2`` the distance from the
    outermost level, and the whole is divided by the mass kept, ``1 - exp(-a·reach)``."""
    g = reach - xmax + 0.5 * step
    beyond = np.exp(-SQRT2 * reach) * (np.square(g) + SQRT2 * g + 1.0)
    return np.asarray((distortion - beyond) / -np.expm1(-SQRT2 * reach), dtype=np.float64)


def given_extremes(
    distortion: FloatArray, xmax: FloatArray, step: FloatArray, reach: FloatArray,
    count: int, extremes: int = 1,
) -> FloatArray:
    """Mean D over a group of ``count`` weights whose ``extremes`` farthest lie at ``reach``
    (its largest magnitude, or the two ends of its span about the grid's centre; ``reach ≥
    xmax``), the others drawn from the Laplacian restricted to ``|x| ≤ reach``
    (``within_reach``); an extreme weight is ``reach - xmax + step/2`` from the outermost
    level. Given its own extremes, a group has no weight beyond them: a block of a few dozen
    quantized over its own range overloads nothing, where the unrestricted D charges it the
    Laplacian's whole tail (20 dB too low at 8 bits in blocks of 128); a clipped group's
    extremes still pay their overload."""
    extremes = min(extremes, count)
    inner = within_reach(distortion, xmax, step, reach)
    edge = np.square(reach - xmax + 0.5 * step)
    return np.asarray(((count - extremes) * inner + extremes * edge) / count, dtype=np.float64)


def uniform_given_extremes(
    xmax: FloatArray, levels: int, reach: FloatArray, count: int, *, midtread: bool,
    extremes: int = 1,
) -> FloatArray:
    """``given_extremes`` for the N-level midrise grid (``laplacian_uniform_distortion``) or
    midtread grid (``laplacian_midtread_distortion``) on the unit-variance Laplacian."""
    x = np.asarray(xmax, np.float64)
    if midtread:
        whole, step = laplacian_midtread_distortion(x, levels), 2.0 * x / (levels - 1)
    else:
        whole, step = laplacian_uniform_distortion(x, levels), 2.0 * x / levels
    return given_extremes(np.asarray(whole, np.float64), x, step, reach, count, extremes)
