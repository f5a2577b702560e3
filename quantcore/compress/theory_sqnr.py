"""Closed-form SQNR of the layer and channel paths: each group (a tensor, or a channel) a
Laplacian of its own std, through the design its quantizer uses (``quantcore.design.theory``),
weighed by its variance in the weights' units.
"""

from __future__ import annotations

import numpy as np

from quantcore.design import theory
from quantcore.design.extremes import uniform_given_extremes
from quantcore.quantizers import Design
from quantcore.quantizers.deadzone import DeadzoneDesign
from quantcore.quantizers.stats import sqnr_db
from quantcore.quantizers.uniform import MidriseDesign, MidtreadDesign
from quantcore.spec import QuantizerSpec, Support


def group_theory_db(
    spec: QuantizerSpec, d: Design, xmax_of: float | np.ndarray, sigma: np.ndarray,
    weight: np.ndarray, count: int,
) -> float | None:
    """Closed-form SQNR for a Laplacian of std ``sigma`` (normalised units), per group of
    ``count`` weights (a tensor, or a channel), weighed by ``weight``."""
    xmax = np.broadcast_to(np.asarray(xmax_of, np.float64), sigma.shape)
    keep = (sigma > 0) & (xmax > 0)
    if not keep.any():
        return None
    xmax, sigma, weight = xmax[keep], sigma[keep], weight[keep]
    if isinstance(d, MidriseDesign | MidtreadDesign):
        midtread = isinstance(d, MidtreadDesign)
        x = xmax / sigma  # in units of each group's own std
        # A grid spanning its group's largest weight (support max_abs) overloads none: the
        # paper's D charges it the Laplacian's tail all the same (3.4 dB too low for channels
        # of 4096 at 8 bits), so those groups are taken given their largest weight. A
        # threshold rule keeps the paper's D, whose tail the clipped weights are samples of.
        if spec.support is Support.MAX_ABS:
            found = uniform_given_extremes(x, spec.levels, x, count, midtread=midtread)
        elif midtread:
            found = np.asarray(theory.laplacian_midtread_distortion(x, spec.levels), np.float64)
        else:
            found = np.asarray(theory.laplacian_uniform_distortion(x, spec.levels), np.float64)
        dist = found * sigma * sigma
    elif isinstance(d, DeadzoneDesign):
        dist = np.asarray(theory.laplacian_deadzone_distortion(
            xmax / d.support_edge, max_index=d.max_index, ratio=d.ratio, sigma=sigma
        ), np.float64)  # fmt: skip
    else:
        return None
    signal = float(np.dot(weight, sigma * sigma))
    noise = float(np.dot(weight, dist))
    return sqnr_db(signal, noise)
