"""The bias shift that removes a layer's mean error (bias correction).

``output_shift``: ``-ΔW · E[x]`` per output channel (times Gemm's alpha), the shift of the
output mean that quantization caused; adding it to the bias removes it, on the channels
whose mean error agrees between the two halves of the samples.
"""

from __future__ import annotations

import numpy as np

from quantcore.compress.hessian import LayerStats


def output_shift(
    stats: LayerStats, original: np.ndarray, dequantized: np.ndarray
) -> tuple[np.ndarray, int]:
    """``-ΔW · E[x]`` per output channel (float64, length ``rows``) and how many channels
    keep it: a channel whose mean error is not the same on both halves of the samples (same
    sign, neither more than twice the other: the shift lowers the error on each half
    measured from the other) gets none, as its mean error is the samples' and not the
    layer's."""
    g = stats.geometry
    delta = g.rows_of(dequantized.astype(np.float64) - np.asarray(original, np.float64))
    scale = g.alpha if g.op == "Gemm" else 1.0
    shift = -np.einsum("grk,gk->gr", delta, stats.mean).reshape(g.rows) * scale
    halves = stats.halves_mean()
    if halves is None:
        return shift, g.rows
    a, b = (np.einsum("grk,gk->gr", delta, m).reshape(g.rows) for m in halves)
    steady = (a * (a - 2 * b) < 0) & (b * (b - 2 * a) < 0)
    return np.where(steady, shift, 0.0), int(np.count_nonzero(steady))
