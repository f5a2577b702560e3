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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantcore.compress.normalize import tensor_moments
from quantcore.design import theory
from quantcore.design.theory import hui_xmax, jayant_xmax
from quantcore.errors import InvalidSpecError
from quantcore.quantizers import design
from quantcore.quantizers.base import Design, code_dtype
from quantcore.quantizers.codes import BlockDecoder, QuantizedTensor, decode
from quantcore.quantizers.stats import (
    CountArray,
    code_counts,
    code_entropy_bits,
    levels_used,
    sqnr_db,
)
from quantcore.spec import Method, QuantizerSpec, Support

MIN_BLOCK = 16
CLIP_RATIOS = np.round(np.arange(1.0, 0.495, -0.05), 2)  # 1.0, 0.95, ..., 0.5
# Weights per chunk: blocks are quantized a slab of rows at a time to bound temporaries.
CHUNK = 1 << 18
FLOAT16_MAX = float(np.finfo(np.float16).max)
_WHOLE_RANGE = frozenset({Support.MAX_ABS, Support.WMAX, Support.ABS_WMIN})


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


@dataclass(frozen=True, kw_only=True)
class _Grid:
    """How codes of one family map to values."""

    code_min: int
    code_max: int
    zero_point: bool
    design: Design | None  # None: the uniform integer grid


def _grid(spec: QuantizerSpec, zero_point: bool, sample: np.ndarray) -> _Grid:
    if spec.method is Method.UNIFORM:
        n = spec.levels
        if zero_point:
            return _Grid(code_min=0, code_max=n - 1, zero_point=True, design=None)
        if spec.bits < 2:
            raise InvalidSpecError(
                f"bits={spec.bits} is too few for a symmetric group quantizer: it needs at "
                "least 2 (or zero_point=true)"
            )
        return _Grid(code_min=-(n // 2), code_max=n // 2 - 1, zero_point=False, design=None)
    chosen = design(spec, sample)
    return _Grid(code_min=chosen.code_min, code_max=chosen.code_max, zero_point=False,
                 design=chosen)  # fmt: skip


def _threshold_ratio(
    spec: QuantizerSpec, x: np.ndarray, red: int, amax: np.ndarray
) -> np.ndarray | None:
    """Per-block clip ratio of a data-free or percentile rule; None: search (mse) or 1."""
    support = spec.support
    if support is Support.MSE or support in _WHOLE_RANGE:
        return None
    if support is Support.PERCENTILE:
        assert spec.support_value is not None
        clip = np.percentile(np.abs(x), spec.support_value, axis=red, keepdims=True)
    else:
        rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=red, keepdims=True))
        if support is Support.JAYANT:
            factor = jayant_xmax(spec.levels)
        elif support is Support.HUI:
            factor = hui_xmax(spec.levels)
        else:
            assert spec.support_value is not None
            factor = spec.support_value
        clip = factor * rms
    safe = np.where(amax > 0, amax, 1.0)
    return np.clip(clip / safe, 0.0, 1.0).astype(np.float32)


def _candidates(spec: QuantizerSpec, x: np.ndarray, red: int, amax: np.ndarray) -> list[
    np.ndarray | float
]:
    ratio = _threshold_ratio(spec, x, red, amax)
    if ratio is not None:
        return [ratio]
    if spec.support is Support.MSE:
        return [float(r) for r in CLIP_RATIOS]
    return [1.0]


def _try(
    x: np.ndarray, red: int, grid: _Grid, ratio: np.ndarray | float, lo: np.ndarray,
    hi: np.ndarray, amax: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(codes, float16 scales, zero points, per-block squared error) at ``ratio``."""
    zp = None
    if grid.design is not None:
        step = amax * ratio / grid.design.support_edge
    elif grid.zero_point:
        step = (hi - lo) * ratio / grid.code_max
    else:
        step = amax * ratio / grid.code_max
    scale = np.asarray(step, np.float32).astype(np.float16)
    s = scale.astype(np.float32)
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
    if grid.design is not None:
        t = x * inv
        codes = np.empty(x.shape, grid.design.dtype)
        grid.design.encode(t, codes)
        values = np.asarray(grid.design.levels, np.float32)[codes] * s
    else:
        q = np.rint(x * inv)
        if grid.zero_point:
            zp = np.clip(np.rint(-lo * ratio * inv), 0, grid.code_max)
            q += zp
        np.clip(q, grid.code_min, grid.code_max, out=q)
        codes = q.astype(code_dtype(grid.code_min, grid.code_max))
        values = (q - zp) * s if zp is not None else q * s
    error = np.square(values - x, dtype=np.float64).sum(axis=red, keepdims=True)
    zp_codes = None if zp is None else zp.astype(code_dtype(0, grid.code_max))
    return codes, scale, zp_codes, error


def _keep_sums(
    x: np.ndarray, red: int, grid: _Grid, codes: np.ndarray, scale: np.ndarray,
    zp: np.ndarray | None,
) -> np.ndarray:
    """Move the fewest codes of each block one step (those whose rounding was closest to a
    tie) so that the block's sum of weights is kept to within half a step; returns the
    blocks' squared error. Rounding each weight alone leaves a block sum off by up to
    ``√B/2`` steps, and a layer whose input has a large mean (after a ReLU or hardswish) turns
    that into a bias on every output: measured on real CNNs, keeping sums costs a little weight
    MSE and gains many dB at the output."""
    s = scale.astype(np.float32)
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
    q = codes.astype(np.float32)
    offset = zp.astype(np.float32) if zp is not None else np.float32(0.0)
    residual = x * inv + offset - q  # steps each code is short of its weight
    short = np.rint(residual.sum(axis=red, keepdims=True))
    # A block's k codes to step up are those from its k-th largest residual on (the k
    # smallest, to step down), among codes with room to move: one sort each way.
    size = residual.shape[red]
    for sign, room in ((1.0, q < grid.code_max), (-1.0, q > grid.code_min)):
        score = np.where(room, residual * sign, -np.inf)
        need = np.clip(short * sign, 0, size).astype(np.intp)
        ranked = np.sort(score, axis=red)
        edge = np.take_along_axis(ranked, np.clip(size - need, 0, size - 1), axis=red)
        q += sign * ((score >= edge) & (need > 0) & room)
    codes[...] = q.astype(codes.dtype)
    values = (q - offset) * s
    return np.square(values - x, dtype=np.float64).sum(axis=red, keepdims=True)


def _blocks(
    x: np.ndarray, red: int, spec: QuantizerSpec, grid: _Grid
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float, int, np.ndarray]:
    """Quantize a slab of blocks: codes, scales, zero points, noise, weights inside, and the
    clip thresholds (weights' units) of its blocks."""
    hi = np.maximum(x.max(axis=red, keepdims=True), 0.0)
    lo = np.minimum(x.min(axis=red, keepdims=True), 0.0)
    amax = np.maximum(hi, -lo)
    best: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray] | None = None
    best_ratio = np.ones_like(amax)
    for ratio in _candidates(spec, x, red, amax):
        codes, scale, zp, error = _try(x, red, grid, ratio, lo, hi, amax)
        if best is None:
            best = (codes, scale, zp, error)
            best_ratio = np.broadcast_to(np.asarray(ratio, np.float32), amax.shape).copy()
            continue
        better = error < best[3]
        b_codes, b_scale, b_zp, b_error = best
        np.copyto(b_codes, codes, where=np.broadcast_to(better, codes.shape))
        np.copyto(b_scale, scale, where=better)
        if b_zp is not None and zp is not None:
            np.copyto(b_zp, zp, where=better)
        np.copyto(b_error, error, where=better)
        np.copyto(best_ratio, np.asarray(ratio, np.float32), where=better)
    assert best is not None
    codes, scale, zp, error = best
    if grid.design is None:
        error = _keep_sums(x, red, grid, codes, scale, zp)
    if grid.zero_point:
        clip_lo, clip_hi = lo * best_ratio, hi * best_ratio
    else:
        clip_hi = amax * best_ratio
        clip_lo = -clip_hi
    inside = int(np.count_nonzero((x >= clip_lo) & (x <= clip_hi)))
    # The threshold a symmetric quantizer of the same step would have: half the range.
    clip = (clip_hi - clip_lo) / 2.0
    return codes, scale, zp, float(error.sum()), inside, clip


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
    if pad:  # zeros: inside every block's range, and exact on every uniform grid
        w = np.pad(w, [(0, pad) if a == axis else (0, 0) for a in range(len(view))])
    blocked = w.reshape((*view[:axis], count, block_size, *view[axis + 1 :]))
    # Each block along the last axis: every reduction below runs over contiguous memory.
    work = np.moveaxis(blocked, axis + 1, -1)
    scale_shape = work.shape[:-1]
    amax_all = float(np.max(np.abs(w))) if w.size else 0.0
    levels = max(spec.levels - 1, 1)
    if amax_all / levels > FLOAT16_MAX:
        raise OverflowError(f"{name}: weights up to {amax_all:.3g} overflow float16 scales")
    unit_sample = (w.reshape(-1)[:: max(1, w.size // (1 << 16))] / (amax_all or 1.0))
    grid = _grid(spec, zero_point and spec.method is Method.UNIFORM, unit_sample)
    codes = np.empty(work.shape, code_dtype(grid.code_min, grid.code_max))
    scale = np.empty(scale_shape, np.float16)
    zp = np.empty(scale_shape, code_dtype(0, grid.code_max)) if grid.zero_point else None
    clips = np.empty(scale_shape, np.float32)
    rms = np.empty(scale_shape, np.float64)
    rows = max(1, CHUNK // max(1, work[0].size)) if work.shape[0] else 1
    noise, inside = 0.0, 0
    for start in range(0, work.shape[0], rows):
        part = slice(start, start + rows)
        x = np.ascontiguousarray(work[part])
        c, s, z, n, i, clip = _blocks(x, -1, spec, grid)
        codes[part], clips[part], scale[part] = c, clip[..., 0], s[..., 0]
        if zp is not None and z is not None:
            zp[part] = z[..., 0]
        rms[part] = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))
        noise += n
        inside += i
    # Scales (and zero points) already have the view's shape with the block count along
    # ``axis``; the codes go back to the view's (padded) layout.
    codes = np.moveaxis(codes, -1, axis + 1)
    decoder = BlockDecoder(
        scale=scale, view=view, axis=axis, block_size=block_size, zero_point=zp,
        levels=None if grid.design is None else grid.design.levels,
    )  # fmt: skip
    codes_view = np.ascontiguousarray(codes).reshape(w.shape)
    if pad:
        codes_view = codes_view[tuple(slice(0, length) if a == axis else slice(None)
                                      for a in range(len(view)))]  # fmt: skip
    flat_codes = np.ascontiguousarray(codes_view).reshape(shape)
    dequantized = decode(flat_codes, decoder)
    if pad:  # the padding's own error (codebooks without a zero level) is no weight's
        error = dequantized.reshape(-1) - np.asarray(weights, np.float32).reshape(-1)
        noise = float(np.dot(error.astype(np.float64), error.astype(np.float64)))
        inside -= pad * (work.size // (count * block_size))
    quantized = QuantizedTensor(
        codes=flat_codes, code_min=grid.code_min, code_max=grid.code_max, decoder=decoder,
        dequantized=dequantized,
    )  # fmt: skip
    return GroupOutcome(
        quantized=quantized, counts=code_counts(flat_codes), noise=noise, inside=inside,
        xmax=float(np.mean(np.divide(clips, rms, out=np.zeros_like(rms), where=rms > 0))),
        xmax_abs=float(clips.max()) if clips.size else 0.0,
        theory_db=_theory_db(spec, grid, clips, rms, block_size),
    )  # fmt: skip


def _theory_db(
    spec: QuantizerSpec, grid: _Grid, clips: np.ndarray, rms: np.ndarray, block_size: int
) -> float | None:
    """Σ signal / Σ noise over blocks, each a Laplacian of its own RMS through its uniform
    quantizer (midtread, symmetric; midrise over the whole range, asymmetric)."""
    if grid.design is not None:
        return None
    keep = (rms > 0) & (clips > 0)
    if not keep.any():
        return None
    sigma = rms[keep].astype(np.float64)
    xmax = clips[keep].astype(np.float64) / sigma
    if grid.zero_point:
        dist = theory.laplacian_uniform_distortion(xmax, spec.levels, 1.0)
    else:
        dist = theory.laplacian_midtread_distortion(xmax, spec.levels, 1.0)
    noise = float(np.dot(sigma * sigma, np.asarray(dist, np.float64)))
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

