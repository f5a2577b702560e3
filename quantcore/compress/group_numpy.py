"""The NumPy block quantizer of granularity ``group``, one slab of blocks at a time.

``_blocks`` quantizes a slab whose blocks lie along axis ``red`` (clip search, codes, keeping
block sums, errors); ``quantcore.compress.groups`` describes the rule. It is the reference the
compiled kernels (``quantcore.quantizers.block_kernels``) are tested against bit for bit, the
path ``quantize_groups`` takes when the kernels are switched off, and GPTQ's requantizer of
the columns it updates (``quantcore.compress.gptq``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantcore.design.theory import hui_xmax, jayant_xmax
from quantcore.errors import InvalidSpecError
from quantcore.quantizers import design
from quantcore.quantizers.base import Design, code_dtype
from quantcore.spec import Method, QuantizerSpec, Support

CLIP_RATIOS = np.round(np.arange(1.0, 0.495, -0.05), 2)  # 1.0, 0.95, ..., 0.5
_WHOLE_RANGE = frozenset({Support.MAX_ABS, Support.WMAX, Support.ABS_WMIN})
# Weights per chunk: blocks are quantized a slab of rows at a time to bound temporaries.
CHUNK = 1 << 18
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True, kw_only=True)
class _Grid:
    """How codes of one family map to values."""

    code_min: int
    code_max: int
    zero_point: bool
    design: Design | None  # None: the uniform integer grid
    refit: bool = False  # each block's scale refitted to its codes (``_refit``)


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
                 design=chosen, refit=spec.method is Method.MULAW)  # fmt: skip


def _threshold_ratio(
    spec: QuantizerSpec, x: np.ndarray, red: int, amax: np.ndarray,
    mean_square: np.ndarray | None = None,
) -> np.ndarray | None:
    """Per-block clip ratio of a data-free or percentile rule; None: search (mse) or 1.
    ``mean_square``: the blocks' ``mean(x²)`` when the caller has it (else from ``x``)."""
    support = spec.support
    if support is Support.MSE or support in _WHOLE_RANGE:
        return None
    if support is Support.PERCENTILE:
        assert spec.support_value is not None
        clip = np.percentile(np.abs(x), spec.support_value, axis=red, keepdims=True)
    else:
        if mean_square is None:
            mean_square = np.mean(np.square(x, dtype=np.float64), axis=red, keepdims=True)
        rms = np.sqrt(mean_square)
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


def block_scale(
    grid: _Grid, ratio: np.ndarray | float, lo: np.ndarray, hi: np.ndarray, amax: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each block's float16 scale at clip ``ratio``, its float32 value and reciprocal (0
    where the scale is 0); the compiled path takes the same numbers from here."""
    if grid.design is not None:
        step = amax * ratio / grid.design.support_edge
    elif grid.zero_point:
        step = (hi - lo) * ratio / grid.code_max
    else:
        step = amax * ratio / grid.code_max
    scale = np.asarray(step, np.float32).astype(np.float16)
    s = scale.astype(np.float32)
    return scale, s, np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)


def block_zero_point(
    grid: _Grid, ratio: np.ndarray | float, lo: np.ndarray, inv: np.ndarray
) -> np.ndarray:
    """Each block's zero point at clip ``ratio`` (float, the code that stands for 0); the
    compiled path takes the same numbers from here."""
    return np.clip(np.rint(-lo * ratio * inv), 0, grid.code_max)


def _ranges(x: np.ndarray, red: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each block's ``max(max x, 0)``, ``min(min x, 0)`` and the larger magnitude."""
    hi = np.maximum(x.max(axis=red, keepdims=True), 0.0)
    lo = np.minimum(x.min(axis=red, keepdims=True), 0.0)
    return hi, lo, np.maximum(hi, -lo)


def reach_of(lo: np.ndarray, hi: np.ndarray, amax: np.ndarray, zero_point: bool) -> np.ndarray:
    """How far each block's weights reach from the centre of its grid's symmetric model: half
    its span with a zero point (the grid spans ``[lo, hi]``), else its largest magnitude. A
    clip at ratio 1 is exactly this."""
    return (hi - lo) / 2.0 if zero_point else amax


def _try(
    x: np.ndarray, red: int, grid: _Grid, ratio: np.ndarray | float, lo: np.ndarray,
    hi: np.ndarray, amax: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(codes, float16 scales, zero points, per-block squared error) at ``ratio``."""
    zp = None
    scale, s, inv = block_scale(grid, ratio, lo, hi, amax)
    if grid.design is not None:
        t = x * inv
        codes = np.empty(x.shape, grid.design.dtype)
        grid.design.encode(t, codes)
        values = np.asarray(grid.design.levels, np.float32)[codes] * s
    else:
        q = np.rint(x * inv)
        if grid.zero_point:
            zp = block_zero_point(grid, ratio, lo, inv)
            q += zp
        np.clip(q, grid.code_min, grid.code_max, out=q)
        codes = q.astype(code_dtype(grid.code_min, grid.code_max))
        values = (q - zp) * s if zp is not None else q * s
    error = np.square(values - x, dtype=np.float64).sum(axis=red, keepdims=True)
    zp_codes = None if zp is None else zp.astype(code_dtype(0, grid.code_max))
    return codes, scale, zp_codes, error


def block_grid(
    x: np.ndarray, red: int, spec: QuantizerSpec, grid: _Grid
) -> tuple[np.ndarray, np.ndarray | None]:
    """The float16 scales and zero points ``_blocks`` gives the blocks of ``x``, without its
    codes: keeping block sums moves codes, never a block's grid (GPTQ's requantizer rounds
    the codes itself)."""
    hi, lo, amax = _ranges(x, red)
    candidates = _candidates(spec, x, red, amax)
    if len(candidates) > 1:
        _, scale, zp, _, _, _, _ = _blocks(x, red, spec, grid)
        return scale, zp
    ratio = candidates[0]
    scale, _, inv = block_scale(grid, ratio, lo, hi, amax)
    if not grid.zero_point:
        return scale, None
    return scale, block_zero_point(grid, ratio, lo, inv).astype(code_dtype(0, grid.code_max))


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


def _refit(
    x: np.ndarray, red: int, grid: _Grid, codes: np.ndarray, scale: np.ndarray,
    error: np.ndarray,
) -> np.ndarray:
    """Each block's float16 scale of least squared error for its codes, ``⟨x, ℓ⟩ / ⟨ℓ, ℓ⟩``,
    taken (into ``scale``) where it lowers the block's error; returns the errors. A block's
    codes stay.

    The mu-law levels sit low in their cells (midpoints on the companded curve), so a block
    scaled to its largest magnitude comes back smaller than it went in, every layer alike:
    on a real detector at 4 bits the gain ``⟨w, ŵ⟩ / ⟨w, w⟩`` was 0.91 a layer, compounding
    over its 64 layers."""
    assert grid.design is not None and grid.design.levels is not None
    level = np.asarray(grid.design.levels, np.float32)[codes]
    wide = level.astype(np.float64)
    num = np.sum(wide * x.astype(np.float64), axis=red, keepdims=True)
    den = np.sum(wide * wide, axis=red, keepdims=True)
    fitted = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    stored = fitted.astype(np.float32).astype(np.float16)
    s = stored.astype(np.float32)
    refitted = np.square(level * s - x, dtype=np.float64).sum(axis=red, keepdims=True)
    keep = np.isfinite(s) & (s > 0) & (refitted < error)
    np.copyto(scale, stored, where=keep)
    return np.where(keep, refitted, error)


def _blocks(
    x: np.ndarray, red: int, spec: QuantizerSpec, grid: _Grid
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float, int, np.ndarray, np.ndarray]:
    """Quantize a slab of blocks: codes, scales, zero points, noise, weights inside, and the
    clip thresholds and reaches (``reach_of``; weights' units) of its blocks."""
    hi, lo, amax = _ranges(x, red)
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
    elif grid.refit:
        error = _refit(x, red, grid, codes, scale, error)
    if grid.zero_point:
        clip_lo, clip_hi = lo * best_ratio, hi * best_ratio
    else:
        clip_hi = amax * best_ratio
        clip_lo = -clip_hi
    inside = int(np.count_nonzero((x >= clip_lo) & (x <= clip_hi)))
    # The threshold a symmetric quantizer of the same step would have: half the range.
    clip = (clip_hi - clip_lo) / 2.0
    return codes, scale, zp, float(error.sum()), inside, clip, reach_of(lo, hi, amax,
                                                                       grid.zero_point)


@dataclass(frozen=True, kw_only=True)
class Blocks:
    """Every block of a tensor quantized: codes in the view's shape, per-block arrays in the
    scales' shape, sums over the blocks (padding included) and, from the compiled path, the
    dequantized weights in the view's shape."""

    grid: _Grid
    codes: np.ndarray
    scale: np.ndarray
    zp: np.ndarray | None
    clips: np.ndarray
    rms: np.ndarray
    reach: np.ndarray  # float32: each block's largest magnitude, or half its span (reach_of)
    noise: float
    inside: int
    dequantized: np.ndarray | None


def unit_sample(w3: np.ndarray, count: int, size: int, block_amax: np.ndarray) -> np.ndarray:
    """The weights a fitted codebook (the exponential family's) is fitted to: about 65536
    evenly through the zero-padded tensor ``w3`` (p × length × q, blocks of ``size`` along
    its middle axis, ``count`` of them a row), each divided by its block's largest magnitude
    (``block_amax``, p × count × q), as the blocks are quantized. Divided by the tensor's
    largest magnitude instead, the codebook fitted weights far smaller than the blocks'
    (4 bits in groups of 32: weight SQNR ~8-16 dB against ~19 on real models)."""
    p_len, length, q_len = w3.shape
    total = p_len * count * size * q_len
    at = np.arange(0, total, max(1, total // (1 << 16)))
    p, pos, q = np.unravel_index(at, (p_len, count * size, q_len))
    inside = pos < length
    values = np.zeros(at.size, np.float32)
    values[inside] = w3[p[inside], pos[inside], q[inside]]
    amax = block_amax[p, pos // size, q]
    return np.divide(values, amax, out=np.zeros_like(values), where=amax > 0)


def check_range(name: str, spec: QuantizerSpec, amax_all: float) -> None:
    if amax_all / max(spec.levels - 1, 1) > FLOAT16_MAX:
        raise OverflowError(f"{name}: weights up to {amax_all:.3g} overflow float16 scales")


def numpy_blocks(
    name: str, w: np.ndarray, spec: QuantizerSpec, axis: int, block_size: int, zero_point: bool
) -> Blocks:
    """The NumPy path (the reference): pad, move each block to the last axis, slab by slab."""
    view = w.shape
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
    check_range(name, spec, amax_all)
    p_len, q_len = math.prod(view[:axis]), math.prod(view[axis + 1 :])
    sample = np.empty(0, np.float32)  # read only by the exponential family's design
    if spec.method is Method.LOG:
        block_amax = np.max(np.abs(work), axis=-1).reshape(p_len, count, q_len)
        sample = unit_sample(w.reshape(p_len, -1, q_len), count, block_size, block_amax)
    grid = _grid(spec, zero_point and spec.method is Method.UNIFORM, sample)
    codes = np.empty(work.shape, code_dtype(grid.code_min, grid.code_max))
    scale = np.empty(scale_shape, np.float16)
    zp = np.empty(scale_shape, code_dtype(0, grid.code_max)) if grid.zero_point else None
    clips = np.empty(scale_shape, np.float32)
    reach = np.empty(scale_shape, np.float32)
    rms = np.empty(scale_shape, np.float64)
    rows = max(1, CHUNK // max(1, work[0].size)) if work.shape[0] else 1
    noise, inside = 0.0, 0
    for start in range(0, work.shape[0], rows):
        part = slice(start, start + rows)
        x = np.ascontiguousarray(work[part])
        c, s, z, n, i, clip, r = _blocks(x, -1, spec, grid)
        codes[part], clips[part], scale[part], reach[part] = c, clip[..., 0], s[..., 0], r[..., 0]
        if zp is not None and z is not None:
            zp[part] = z[..., 0]
        rms[part] = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))
        noise += n
        inside += i
    # Scales (and zero points) already have the view's shape with the block count along
    # ``axis``; the codes go back to the view's (padded) layout.
    codes_view = np.ascontiguousarray(np.moveaxis(codes, -1, axis + 1)).reshape(w.shape)
    if pad:
        codes_view = codes_view[tuple(slice(0, length) if a == axis else slice(None)
                                      for a in range(len(view)))]  # fmt: skip
    return Blocks(grid=grid, codes=codes_view, scale=scale, zp=zp, clips=clips, rms=rms,
                   reach=reach, noise=noise, inside=inside, dequantized=None)  # fmt: skip
