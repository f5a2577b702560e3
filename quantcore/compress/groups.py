"""Granularity ``group``: one float16 scale per block of weights along a weight's reduction axis.

A block is ``block_size`` consecutive weights along the axis that a layer sums over (Conv:
input channels; MatMul: K; Gemm: by ``transB``; recurrent matrices: the input), so each
output sees the error of a few dozen weights per scale whatever the channels' ranges: a
folded batch-norm's channels that differ by 100x, or a heavy tail, cost one block each, not
the whole layer.

Per block, with N = 2^bits levels and a clip ratio r:

- uniform, ``zero_point=True`` (asymmetric): the range ``[lo, hi]`` (always holding 0) shrunk
  by r, ``s = (hi - lo)·r/(N-1)``, ``zp = round(-lo·r/s)``, codes ``q = clip(round(w/s) + zp,
  0, N-1)``, ``ŵ = (q - zp)·s``: ONNX's ``DequantizeLinear`` with ``block_size``.
- uniform, ``zero_point=False``: ``s = max|w|·r/(N/2-1)``, ``q ∈ [-N/2, N/2-1]``, ``ŵ = q·s``.
- the codebook families: the family's design (levels in its unit) with ``unit = max|w|·r /
  support_edge`` per block, ``ŵ = levels[q]·unit``.

``s`` (or ``unit``) is rounded to float16 before the codes are chosen, so the codes are the
best for the scale actually stored. The clip ratio comes from the support rule in each
block's own units: ``mse`` tries ``CLIP_RATIOS`` and keeps each block's lowest error (the
measured-MSE optimum, searched for all blocks at once); ``max_abs``/``wmax``/``abs_wmin``
keep the whole range; ``jayant``, ``hui``, ``value`` and ``percentile`` clip at that threshold
times the block's RMS (or at the percentile of its |w|).

Blocks are cut in a view of the tensor (``block_view``): a Conv kernel ``(O, I, kh, kw)`` is
viewed as ``(O, I·kh·kw)``, so a depthwise kernel gets one block per channel and a 3x3 kernel
blocks over input channels and window; the last block along the axis may be shorter
(ONNX's ``block_size`` allows it), so no dimension needs to be a multiple of the block size.

The blocks are quantized by compiled kernels (``quantcore.compress.group_compiled``) with the
results, bit for bit, of the NumPy slab quantizer (``quantcore.compress.group_numpy``), which
``USE_KERNELS = False`` selects and the tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantcore.compress.group_numpy import (  # noqa: F401  (_blocks, _grid: GPTQ's requantizer)
    CLIP_RATIOS,
    FLOAT16_MAX,
    _blocks,
    _Grid,
    _grid,
    numpy_blocks,
)
from quantcore.compress.normalize import tensor_moments
from quantcore.design.extremes import uniform_given_extremes
from quantcore.quantizers.codes import BlockDecoder, QuantizedTensor, decode
from quantcore.quantizers.stats import (
    CountArray,
    code_counts,
    code_entropy_bits,
    levels_used,
    sqnr_db,
)
from quantcore.spec import QuantizerSpec

MIN_BLOCK = 16
# False: the NumPy path (the reference the compiled kernels are tested against) for every tensor.
USE_KERNELS = True
# Blocks whose closed-form distortion is evaluated together (``_theory_db``).
THEORY_SLICE = 1 << 15


def block_view(shape: tuple[int, ...], axis: int, span_trailing: bool) -> tuple[int, ...]:
    """The shape in which blocks are cut along ``axis``: with ``span_trailing``, ``axis`` and
    every axis after it flattened into one (the summed axes of a Conv kernel)."""
    if not span_trailing or axis == len(shape) - 1:
        return shape
    return (*shape[:axis], math.prod(shape[axis:]))


@dataclass(frozen=True, kw_only=True)
class GroupOutcome:
    """A tensor quantized per block, and what its report row needs."""

    quantized: QuantizedTensor
    counts: CountArray
    noise: float  # Σ (w - ŵ)², float64
    inside: int  # weights within their block's clipped range
    xmax: float  # mean clip threshold over blocks, in units of each block's RMS
    xmax_abs: float  # largest clip threshold, in the weights' units
    theory_db: float | None  # closed-form Laplacian SQNR of the blocks' quantizers


def _counts(codes: np.ndarray, code_min: int, code_max: int) -> np.ndarray:
    """``code_counts`` of the codes; the compiled count when the kernels are on (same bins)."""
    if not USE_KERNELS:
        return code_counts(codes)
    # numba loads on first use
    from quantcore.quantizers.kernels import add_counts, add_narrow_counts

    counts = np.zeros(256 if codes.dtype.itemsize == 1 else 1 << 16, np.int64)
    if code_max - code_min < 16:
        add_narrow_counts(codes.reshape(-1), counts, code_min, counts.size - 1)
    else:
        add_counts(codes.reshape(-1), counts, counts.size - 1)
    return counts


def quantize_groups(
    name: str, weights: np.ndarray, spec: QuantizerSpec, *, view: tuple[int, ...], axis: int,
    block_size: int, zero_point: bool,
) -> GroupOutcome:
    """Quantize ``weights`` in blocks of ``block_size`` along ``axis`` of ``view``."""
    shape = tuple(int(d) for d in weights.shape)
    w = np.asarray(weights, np.float32).reshape(view)
    length = view[axis]
    count = -(-length // block_size)
    pad = count * block_size - length
    found = None
    if USE_KERNELS:
        from quantcore.compress.group_compiled import compiled_blocks  # loads numba

        found = compiled_blocks(name, w, spec, axis, block_size, zero_point)
    if found is None:
        found = numpy_blocks(name, w, spec, axis, block_size, zero_point)
    grid, clips, rms = found.grid, found.clips, found.rms
    decoder = BlockDecoder(
        scale=found.scale, view=view, axis=axis, block_size=block_size, zero_point=found.zp,
        levels=None if grid.design is None else grid.design.levels,
    )  # fmt: skip
    flat_codes = np.ascontiguousarray(found.codes).reshape(shape)
    if found.dequantized is None:
        dequantized = decode(flat_codes, decoder)
    else:
        dequantized = found.dequantized.reshape(shape)
    noise, inside = found.noise, found.inside
    if pad:  # the padding's own error (codebooks without a zero level) is no weight's
        # The float32 differences, widened as they are written: the same values as a float32
        # array cast afterwards, without that array (4 bytes a weight, one pass fewer).
        wide = np.empty(dequantized.size, np.float64)
        np.subtract(dequantized.reshape(-1), np.asarray(weights, np.float32).reshape(-1),
                    out=wide, dtype=np.float32)  # fmt: skip
        noise = float(np.dot(wide, wide))
        inside -= pad * (math.prod(view) // length)
    quantized = QuantizedTensor(
        codes=flat_codes, code_min=grid.code_min, code_max=grid.code_max, decoder=decoder,
        dequantized=dequantized,
    )  # fmt: skip
    return GroupOutcome(
        quantized=quantized, counts=_counts(flat_codes, grid.code_min, grid.code_max),
        noise=noise, inside=inside,
        xmax=float(np.mean(np.divide(clips, rms, out=np.zeros_like(rms), where=rms > 0))),
        xmax_abs=float(clips.max()) if clips.size else 0.0,
        theory_db=_theory_db(spec, grid, clips, rms, found.reach, block_size),
    )  # fmt: skip


def _theory_db(
    spec: QuantizerSpec, grid: _Grid, clips: np.ndarray, rms: np.ndarray, reach: np.ndarray,
    block_size: int,
) -> float | None:
    """Σ signal / Σ noise over blocks, each a Laplacian of its own RMS through its uniform
    quantizer (midtread, symmetric; midrise over the whole range, asymmetric), given its own
    extremes (``quantcore.design.extremes``): its largest magnitude, or with a zero point both
    ends of its span, at ``reach`` from the grid's centre."""
    if grid.design is not None:
        return None
    keep = (rms > 0) & (clips > 0)
    if not keep.any():
        return None
    sigma = rms[keep].astype(np.float64)
    xmax = clips[keep].astype(np.float64) / sigma
    within = reach[keep].astype(np.float64) / sigma
    # Element by element, so a slice at a time gives the same values: the formula's dozen
    # temporaries then stay in the cache (half the time of one pass over 500K blocks).
    dist = np.empty_like(xmax)
    for lo in range(0, xmax.size, THEORY_SLICE):
        part = slice(lo, lo + THEORY_SLICE)
        dist[part] = uniform_given_extremes(
            xmax[part], spec.levels, within[part], block_size, midtread=not grid.zero_point,
            extremes=2 if grid.zero_point else 1,
        )  # fmt: skip
    noise = float(np.dot(sigma * sigma, dist))
    return sqnr_db(float(np.dot(sigma, sigma)), noise)


def group_report_fields(outcome: GroupOutcome, weights: np.ndarray, name: str) -> dict[str, Any]:
    """The measured fields of a layer row for ``outcome``."""
    moments = tensor_moments(name, weights)
    n = max(weights.size, 1)
    return {
        "mean": moments.mean, "std": moments.std, "wmin": moments.minimum,
        "wmax": moments.maximum, "within_support_pct": 100.0 * outcome.inside / n,
        "levels_used": levels_used(outcome.counts),
        "entropy_bits": code_entropy_bits(outcome.counts),
        "sqnr_db": sqnr_db(moments.mean_square, outcome.noise / n),
    }  # fmt: skip

