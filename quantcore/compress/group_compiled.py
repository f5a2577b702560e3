"""Granularity ``group`` through the compiled kernels of ``quantcore.quantizers.block_kernels``.

The tensor is read in place as ``(P, L, Q)`` (no padded copy, no blocks moved to the last
axis): one kernel pass gathers each block's range and sum of squares; the clip candidates and
their float16 scales are then computed per block in NumPy with the reference's own formulas
(``quantcore.compress.group_numpy``), since they cost one number per block; a second kernel
pass picks each block's best candidate and writes its codes, dequantized weights and sums.
The results, and the noise summed slab by slab as the reference sums it, are bit for bit the
NumPy path's.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from quantcore.compress.group_numpy import (
    _WHOLE_RANGE,
    CHUNK,
    CLIP_RATIOS,
    Blocks,
    _Grid,
    _grid,
    _threshold_ratio,
    block_scale,
    block_zero_point,
    check_range,
    reach_of,
    unit_sample,
)
from quantcore.quantizers.base import code_dtype
from quantcore.quantizers.block_kernels import (
    CODEBOOK,
    SYMMETRIC,
    ZERO_POINT,
    gather_blocks,
)
from quantcore.quantizers.block_lane_kernels import block_quantize_lanes, takes_lanes
from quantcore.quantizers.block_quantize_kernels import block_quantize
from quantcore.quantizers.block_stats_kernels import block_stats
from quantcore.quantizers.kernel_args import kernel_args, read_only
from quantcore.spec import Method, QuantizerSpec, Support

# Blocks per kernel call: the candidates' per-block arrays of one call stay small.
_SLAB_WEIGHTS = 1 << 20
THREADS = 2  # the kernels release the GIL: slabs run on this many threads
# The uniform grids' blocks of up to 128 a lane each (``block_lane_kernels``); off, block by
# block (``block_quantize``), which the tests compare them with.
USE_LANES = True
# The encoder arguments of the uniform grids, which read no table.
_NO_FAMILY = (0, np.float32(0.0), np.float32(0.0), 0, False, np.zeros(1, np.float32),
              np.zeros(1, np.int64), np.zeros(1, np.int32))  # fmt: skip


def _ratios(
    spec: QuantizerSpec, w3: np.ndarray, size: int, count: int, blocks: slice,
    rms_sq: np.ndarray, amax: np.ndarray,
) -> list[np.ndarray | float]:
    """The reference's ``_candidates`` for the blocks ``blocks`` (per-block arrays)."""
    if spec.support is Support.MSE:
        return [float(r) for r in CLIP_RATIOS]
    if spec.support in _WHOLE_RANGE:
        return [1.0]
    a = amax[blocks]
    if spec.support is Support.PERCENTILE:
        x = np.empty((a.size, size), np.float32)
        gather_blocks(w3, size, count, blocks.start, x)
        ratio = _threshold_ratio(spec, x, -1, a[:, None])
    else:
        # _threshold_ratio's RMS is sqrt(mean(x²)) along the block: the same sums, here.
        ratio = _threshold_ratio(spec, np.zeros((a.size, 1)), -1, a[:, None],
                                 rms_sq[blocks][:, None])  # fmt: skip
    assert ratio is not None
    return [ratio[:, 0]]


def _candidate_arrays(
    grid: _Grid, ratios: list[np.ndarray | float], lo: np.ndarray, hi: np.ndarray,
    amax: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Per candidate and block, as ``_try`` computes them: float16 scale, its float32 value,
    the reciprocal, the zero point (float32) and the clip ratio (float32)."""
    scales16, scales, invs, zps, rats = [], [], [], [], []
    for ratio in ratios:
        scale, s, inv = block_scale(grid, ratio, lo, hi, amax)
        zp = np.zeros_like(s)
        if grid.zero_point:
            zp = block_zero_point(grid, ratio, lo, inv).astype(np.float32)
        scales16.append(scale)
        scales.append(s)
        invs.append(inv)
        zps.append(zp)
        rats.append(np.broadcast_to(np.asarray(ratio, np.float32), amax.shape))
    if len(ratios) == 1:  # views, not stacked copies (the ratio's broadcast made whole)
        return tuple(np.ascontiguousarray(v[0][None]) for v in (scales16, scales, invs, zps, rats))
    return tuple(np.stack(v) for v in (scales16, scales, invs, zps, rats))


def compiled_blocks(
    name: str, w: np.ndarray, spec: QuantizerSpec, axis: int, size: int, zero_point: bool
) -> Blocks | None:
    """Every block of ``w`` (float32, the view's shape) through the kernels; None where a
    codebook family's encoder has no breakpoint table (then the NumPy path runs)."""
    view = w.shape
    length = view[axis]
    count = -(-length // size)
    p_len, q_len = math.prod(view[:axis]), math.prod(view[axis + 1 :])
    # C-contiguous, as the lane kernel's flat views need (a copy only of a strided view)
    w3 = read_only(np.ascontiguousarray(w.reshape(p_len, length, q_len)))
    n_blocks = p_len * count * q_len
    hi = np.empty(n_blocks, np.float32)
    lo = np.empty(n_blocks, np.float32)
    sumsq = np.empty(n_blocks, np.float64)
    block_stats(w3, size, count, hi, lo, sumsq)
    amax = np.maximum(hi, -lo)
    amax_all = float(amax.max()) if amax.size else 0.0
    check_range(name, spec, amax_all)
    uniform = spec.method is Method.UNIFORM
    # Only the exponential family's design reads the sample: the others skip drawing it.
    sample = np.empty(0, np.float32)
    if spec.method is Method.LOG:
        sample = unit_sample(w3, count, size, amax.reshape(p_len, count, q_len))
    grid = _grid(spec, zero_point and uniform, sample)
    family_args: tuple[object, ...] = _NO_FAMILY
    mode, levels = (ZERO_POINT if grid.zero_point else SYMMETRIC), np.zeros(1, np.float32)
    if grid.design is not None:
        family = kernel_args(grid.design, np.dtype(np.float32))
        if family is None:
            return None
        mode, levels = CODEBOOK, np.asarray(grid.design.levels, np.float32)
        fam = family.values
        family_args = (fam[0], fam[1], fam[2], fam[3], *fam[5:9])
    rms_sq = sumsq / size  # np.mean: the pairwise sum over the block, divided by its size
    codes = np.empty(w3.shape, code_dtype(grid.code_min, grid.code_max))
    deq = np.empty(w3.shape, np.float32)
    scale = np.empty(n_blocks, np.float16)
    zp = np.empty(n_blocks, code_dtype(0, grid.code_max)) if grid.zero_point else None
    clips = np.empty(n_blocks, np.float32)
    error = np.empty(n_blocks, np.float64)
    inside = np.empty(n_blocks, np.int64)
    refitted = np.zeros(n_blocks if grid.refit else 1, np.float32)

    lanes = USE_LANES and takes_lanes(mode, size, q_len > 1)

    def slab(start: int, stop: int) -> None:
        part = slice(start, stop)
        ratios = _ratios(spec, w3, size, count, part, rms_sq, amax)
        s16, s, inv, zps, rats = _candidate_arrays(grid, ratios, lo[part], hi[part], amax[part])
        best = np.empty(stop - start, np.int32)
        if lanes:
            block_quantize_lanes(w3, size, count, start, s, inv, zps, rats, lo, hi, amax,
                                 mode, grid.code_min, grid.code_max, codes, deq, error[part],
                                 inside[part], best)  # fmt: skip
        else:
            block_quantize(w3, size, count, start, s, inv, zps, rats, lo, hi, amax, mode,  # type: ignore[call-arg]
                           grid.code_min, grid.code_max, levels, *family_args, grid.refit,
                           codes, deq, error[part], inside[part], best, refitted[part])  # fmt: skip
        if len(ratios) == 1:  # every block takes the one candidate: no gather
            scale[part], ratio = s16[0], rats[0]
            if zp is not None:
                zp[part] = zps[0]
        else:
            pick = (best, np.arange(stop - start))
            scale[part], ratio = s16[pick], rats[pick]
            if zp is not None:
                zp[part] = zps[pick]
        if grid.refit:  # float32 values of float16 scales: exact
            np.copyto(scale[part], refitted[part].astype(np.float16), where=refitted[part] > 0)
        if grid.zero_point:
            clip_lo, clip_hi = lo[part] * ratio, hi[part] * ratio
        else:
            clip_hi = amax[part] * ratio
            clip_lo = -clip_hi
        clips[part] = (clip_hi - clip_lo) / 2.0

    step = max(1, _SLAB_WEIGHTS // size)
    bounds = [(b, min(b + step, n_blocks)) for b in range(0, n_blocks, step)]
    if len(bounds) > 1 and THREADS > 1:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda b: slab(*b), bounds))
    else:
        for b in bounds:
            slab(*b)
    scale_shape = (*view[:axis], count, *view[axis + 1 :])
    return Blocks(
        grid=grid, codes=codes.reshape(view), scale=scale.reshape(scale_shape),
        zp=None if zp is None else zp.reshape(scale_shape), clips=clips.reshape(scale_shape),
        rms=np.sqrt(rms_sq).reshape(scale_shape),
        reach=reach_of(lo, hi, amax, grid.zero_point).reshape(scale_shape),
        noise=_noise(error.reshape(scale_shape), view, axis, size),
        inside=int(inside.sum()), dequantized=deq.reshape(view),
    )  # fmt: skip


def _noise(error: np.ndarray, view: tuple[int, ...], axis: int, size: int) -> float:
    """Σ of the blocks' errors, summed slab by slab as the NumPy path's ``_blocks`` sums them
    (its slabs are rows of the first axis of the blocks-last layout)."""
    per_row = math.prod(error.shape[1:]) * size  # weights per row of that layout
    rows = max(1, CHUNK // max(1, per_row)) if error.shape[0] else 1
    noise = 0.0
    for start in range(0, error.shape[0], rows):
        noise += float(error[start : start + rows][..., None].sum())
    return noise
