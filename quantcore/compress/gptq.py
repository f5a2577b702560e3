"""GPTQ in the group quantizer's format.

GPTQ (Frantar et al., 2023) rounds a weight's columns one at a time along the reduction axis
and spreads each rounding error over the columns not yet rounded, through the inverse
Hessian of the layer's inputs, so that the layer's output error ``tr(ΔW H ΔWᵀ)`` is small
rather than each weight's. Here, with ``H`` per group from ``hessian.py``:

- ``H`` is damped by a share of its mean diagonal (and inputs that never move get a unit
  diagonal), inverted and factored ``H⁻¹ = UᵀU`` (``U`` upper triangular); the share is
  chosen among ``DAMPS`` by fitting on half of the calibration samples and measuring the
  output error on the other half (plain rounding wins if it does better there), then GPTQ
  runs on all of them;
- columns go in blocks of ``block_size``, the group quantizer's blocks: when a block starts,
  its float16 scale and zero point are chosen by the group quantizer's own rule
  (``groups._blocks``, the spec's support) on the weights as updated so far; each column is
  then rounded on that grid, its error ``e / U[j, j]`` pushed into the block's later columns,
  and the block's errors into every later column at its end (the lazy batch update);
- the codes, scales and zero points are those of ``BlockDecoder``, so ``decode``, the ONNX
  writer's ``DequantizeLinear`` with ``block_size`` and the package read them unchanged.

A layer with fewer than ``MIN_ROWS_PER_INPUT·K`` rows is rounded plainly (GPTQ would fit
the rows' noise), unless its statistics come from flat inputs (``LayerStats.flat``: spec
``calibration="flat"``, ``quantcore.jobs.flat_gptq``), which take ``FLAT_DAMP`` and spread
each error only within its own block.
Codebook families (dead-zone, mu-law, log, float) are rounded plainly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantcore.coding.parallel import cores, run_all
from quantcore.compress import groups as groups_module
from quantcore.compress.gptq_factors import _block_factor, _factor
from quantcore.compress.group_numpy import _Grid, block_grid
from quantcore.compress.groups import GroupOutcome, _grid
from quantcore.compress.hessian import MIN_ROWS_PER_INPUT, LayerStats
from quantcore.quantizers.base import code_dtype
from quantcore.quantizers.codes import BlockDecoder, QuantizedTensor, decode
from quantcore.spec import Method, QuantizerSpec

# Damping of H (times its mean diagonal) tried on the first half of the samples; the one
# whose rounding has the lowest output error on the other half is used on all of them.
DAMPS = (0.01, 0.1, 1.0)
# Statistics of flat inputs (``LayerStats.flat``) have no sample noise to fit and no held-out
# samples to choose on: one light damping, measured on the real models of bench/realmodels.
FLAT_DAMP = 0.01
SPAN_WEIGHTS = 1 << 20  # ``_round_rows`` splits a layer's rows into spans of at least this


def _block_error(
    stats: LayerStats, delta_rows: np.ndarray, block_size: int, less: np.ndarray | None = None
) -> float:
    """``output_error`` on the diagonal blocks of ``H`` only (``_block_factor``'s), of
    ``delta_rows`` or, with ``less``, of ``delta_rows - less`` (float64). A large layer's
    blocks are measured on the cores at once and their terms summed in order: the same sum,
    where one thread took 0.1 s of captcha-ocr's 8.4 M-weight layer for each of the two
    errors ``_gptq_flat`` compares, the other core idle. Each block's difference is taken
    there, in float64 as the whole one was, and in its layout: no float64 copy of the layer."""
    k = stats.geometry.k

    def term(lo: int) -> float:
        d = delta_rows[:, :, lo : lo + block_size].astype(np.float64)
        if less is not None:
            d -= less[:, :, lo : lo + block_size]
        return float(np.sum(np.matmul(d, stats.diagonal(lo, min(lo + block_size, k))) * d))

    total = 0.0
    for value in run_all(term, range(0, k, block_size),
                         None if delta_rows.size >= SPAN_WEIGHTS else 1):  # fmt: skip
        total += value
    return total / max(stats.count, 1)


@dataclass(frozen=True, kw_only=True)
class _Coded:
    codes: np.ndarray  # (rows, k)
    scale: np.ndarray  # (rows, blocks) float16
    zero_point: np.ndarray | None


def _round_rows(
    w: np.ndarray, u: np.ndarray, spec: QuantizerSpec, zero_point: bool, block_size: int,
    across: bool = True,
) -> _Coded:
    """GPTQ over ``w`` (groups, rows per group, k) with factors ``u`` (groups, k, k);
    ``across=False``: no update between blocks (``u`` may be ``_block_factor``'s blocks).

    Each row is rounded on its own (its errors go into its own later columns only), so a
    large layer's rows are split into spans rounded on the cores at once: the same codes,
    and one layer no longer holds a job on one core (captcha-ocr's 8.4 M-weight LSTM input
    projection was 60% of its flat-input GPTQ)."""
    groups, per, k = w.shape
    spans = _row_spans(per, groups * k)
    parts = run_all(lambda span: _round_span(w[:, span[0] : span[1]], u, spec, zero_point,
                                             block_size, across), spans)  # fmt: skip
    codes, scale, zp = (_joined(arrays) for arrays in zip(*parts, strict=True))
    assert codes is not None and scale is not None
    rows, nblocks = groups * per, scale.shape[2]
    return _Coded(
        codes=codes.reshape(rows, k), scale=scale.reshape(rows, nblocks),
        zero_point=None if zp is None else zp.reshape(rows, nblocks),
    )  # fmt: skip


def _joined(arrays: tuple[np.ndarray | None, ...]) -> np.ndarray | None:
    """The spans' arrays along the rows (None for a grid without zero points)."""
    present = [a for a in arrays if a is not None]  # all, or none
    if not present:
        return None
    return present[0] if len(present) == 1 else np.concatenate(present, axis=1)


def _row_spans(rows: int, weights_per_row: int) -> list[tuple[int, int]]:
    """Spans of rows, one a core, of at least ``SPAN_WEIGHTS`` weights each, or all rows."""
    count = min(cores(), rows * weights_per_row // SPAN_WEIGHTS, rows)
    if count <= 1:
        return [(0, rows)]
    step = -(-rows // count)
    return [(lo, min(lo + step, rows)) for lo in range(0, rows, step)]


def _round_span(
    w: np.ndarray, u: np.ndarray, spec: QuantizerSpec, zero_point: bool, block_size: int,
    across: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``_round_rows`` of some rows: codes (groups, rows, k), scales and zero points
    (groups, rows, blocks)."""
    groups, per, k = w.shape
    w = np.array(w, np.float64, order="C")  # a copy, in the layout the kernel reads
    grid = _grid(spec, zero_point, np.zeros(1, np.float32))
    nblocks = -(-k // block_size)
    codes = np.empty((groups, per, k), code_dtype(grid.code_min, grid.code_max))
    scale = np.empty((groups, per, nblocks), np.float16)
    zp = np.empty((groups, per, nblocks), code_dtype(0, grid.code_max)) if grid.zero_point \
        else None  # fmt: skip
    for b in range(nblocks):
        lo, hi = b * block_size, min((b + 1) * block_size, k)
        current = w[:, :, lo:hi].astype(np.float32).reshape(groups * per, 1, hi - lo)
        s16, z = block_grid(current, 2, spec, grid)
        scale[:, :, b] = s16.reshape(groups, per)
        s = s16.astype(np.float32).reshape(groups, per).astype(np.float64)
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
        offset = np.zeros_like(s)
        if zp is not None and z is not None:
            zp[:, :, b] = z.reshape(groups, per)
            offset = zp[:, :, b].astype(np.float64)
        errors = np.empty((groups, per, hi - lo))
        factor = _block_of(u, lo, hi, block_size)
        if groups_module.USE_KERNELS:  # numba loads with the first calibrated layer
            from quantcore.compress.gptq_kernel import round_block

            round_block(w, factor, inv, s, offset, lo, hi, float(grid.code_min),
                        float(grid.code_max), codes, errors)  # fmt: skip
        else:
            _round_columns(w, factor, inv, s, offset, lo, hi, grid, codes, errors)
        if hi < k and across:
            w[:, :, hi:] -= np.matmul(errors, u[:, lo:hi, hi:])
    return codes, scale, zp


def _block_of(u: np.ndarray, lo: int, hi: int, block_size: int) -> np.ndarray:
    """The factor of columns ``lo:hi`` (a quantizer block) as one contiguous array, from the
    whole ``u`` (groups, k, k) or from ``_block_factor``'s (groups, blocks, B, B)."""
    n = hi - lo
    block = u[:, lo // block_size, :n, :n] if u.ndim == 4 else u[:, lo:hi, lo:hi]
    return np.ascontiguousarray(block)


def _round_columns(
    w: np.ndarray, u: np.ndarray, inv: np.ndarray, s: np.ndarray, offset: np.ndarray, lo: int,
    hi: int, grid: _Grid, codes: np.ndarray, errors: np.ndarray,
) -> None:
    """The NumPy reference of ``gptq_kernel.round_block`` (same arguments, same bits)."""
    for c, j in enumerate(range(lo, hi)):
        q = np.clip(np.rint(w[:, :, j] * inv) + offset, grid.code_min, grid.code_max)
        codes[:, :, j] = q
        value = (q - offset) * s
        err = (w[:, :, j] - value) / u[:, c, c][:, None]
        w[:, :, j + 1 : hi] -= err[:, :, None] * u[:, None, c, c + 1 :]
        errors[:, :, c] = err


def output_error(stats: LayerStats, delta_rows: np.ndarray, hessian: np.ndarray | None = None,
                 count: int | None = None) -> float:  # fmt: skip
    """``Σ_g tr(ΔW_g H_g ΔW_gᵀ)`` per calibration row: a layer's output error energy (on
    ``hessian`` over ``count`` rows when given, else on all of ``stats``)."""
    h = stats.hessian if hessian is None else hessian
    n = stats.count if count is None else count
    d = delta_rows.astype(np.float64)
    return float(np.sum(np.matmul(d, h) * d)) / max(n, 1)


def _choose_damp(
    stats: LayerStats, rows: np.ndarray, plain_rows: np.ndarray, spec: QuantizerSpec,
    zero_point: bool, block_size: int,
) -> tuple[float | None, str]:
    """The damping whose GPTQ, fitted on the first half of the samples, has the lowest output
    error on the second half; None when plain rounding does better there."""
    g = stats.geometry
    if stats.half is None or min(stats.half_count, stats.count - stats.half_count) < g.k:
        return DAMPS[0], "no held-out half"
    held = stats.hessian - stats.half
    held_count = stats.count - stats.half_count
    best, best_error = None, output_error(stats, plain_rows - rows, held, held_count)
    plain_error = best_error
    for damp in stats.damps or DAMPS:
        u = _factor(stats.half, stats.half_count, damp)
        if u is None:
            continue
        coded = _round_rows(rows, u, spec, zero_point, block_size)
        values = _values(coded, block_size, rows.shape)
        error = output_error(stats, values - rows, held, held_count)
        if error < best_error:
            best, best_error = damp, error
    if best is None:
        return None, "plain rounding did better on held-out samples"
    gain = 10.0 * np.log10(plain_error / best_error) if best_error > 0 else 0.0
    return best, f"damping {best:g} chosen on held-out samples ({gain:.1f} dB there)"


def _values(coded: _Coded, block_size: int, shape: tuple[int, ...]) -> np.ndarray:
    """The weights ``coded`` stands for (as ``BlockDecoder`` decodes them), shaped ``shape``."""
    index = np.arange(coded.codes.shape[1]) // block_size
    values = coded.codes.astype(np.float32)
    if coded.zero_point is not None:
        values -= coded.zero_point.astype(np.float32)[:, index]
    values *= coded.scale.astype(np.float32)[:, index]
    return values.reshape(shape).astype(np.float64)


def gptq_groups(
    name: str, weights: np.ndarray, spec: QuantizerSpec, stats: LayerStats, *,
    view: tuple[int, ...], axis: int, block_size: int, zero_point: bool, plain: GroupOutcome,
) -> tuple[GroupOutcome, str]:
    """``weights`` rounded by GPTQ into the same ``BlockDecoder`` format as ``plain`` (the
    group quantizer's outcome), or ``plain`` itself when GPTQ does not lower the layer's
    output error on held-out calibration samples; the note says which and by how much."""
    g = stats.geometry
    if spec.method is not Method.UNIFORM:
        return plain, f"calibration gptq: {spec.method.value} codes are rounded plainly"
    if stats.flat:
        return _gptq_flat(weights, spec, stats, view=view, axis=axis, block_size=block_size,
                          zero_point=zero_point, plain=plain)  # fmt: skip
    if stats.count < MIN_ROWS_PER_INPUT * g.k:
        return plain, (f"calibration gptq: {stats.count} calibration rows for {g.k} inputs "
                       "per output are too few; rounded plainly")  # fmt: skip
    original = np.asarray(weights, np.float32)
    rows = g.rows_of(original).astype(np.float64)
    # Left in float32: each use subtracts the float64 rows, which widens it exactly.
    plain_rows = g.rows_of(plain.quantized.dequantized)
    damp, why = _choose_damp(stats, rows, plain_rows, spec, zero_point, block_size)
    if damp is None:
        return plain, f"calibration gptq: kept plain rounding ({why})"
    u = _factor(stats.hessian, stats.count, damp)
    if u is None:
        return plain, "calibration gptq: the inputs' Hessian is singular; rounded plainly"
    coded = _round_rows(rows, u, spec, zero_point, block_size)
    outcome = _outcome(coded, weights, stats, view=view, axis=axis, block_size=block_size,
                       plain=plain)  # fmt: skip
    before = output_error(stats, plain_rows - rows)
    after = output_error(stats, g.rows_of(outcome.quantized.dequantized) - rows)
    gain = 10.0 * np.log10(before / after) if before > 0 and after > 0 else 0.0
    return outcome, (f"calibration gptq: layer output error {gain:.1f} dB below plain rounding "
                     f"on {stats.count} calibration rows; {why}")  # fmt: skip


def _gptq_flat(
    weights: np.ndarray, spec: QuantizerSpec, stats: LayerStats, *, view: tuple[int, ...],
    axis: int, block_size: int, zero_point: bool, plain: GroupOutcome,
) -> tuple[GroupOutcome, str]:
    """GPTQ against the flat inputs' ``H``, block by block (``_block_factor``), kept where
    it lowers the error on those blocks of ``H``."""
    g = stats.geometry
    # float32: each span of ``_round_rows`` and each block of ``_block_error`` widens its own
    # part (the same float64 values as a widened copy of the whole layer, without it)
    rows = g.rows_of(np.asarray(weights, np.float32))
    if stats.block % block_size:  # the captured blocks do not hold the quantizer's
        return plain, (f"flat-input gptq: blocks of {block_size} are not within the captured "
                       f"blocks of {stats.block}; rounded plainly")  # fmt: skip
    u = _block_factor(stats, FLAT_DAMP, block_size)
    if u is None:
        return plain, "flat-input gptq: the inputs' Hessian is singular; rounded plainly"
    coded = _round_rows(rows, u, spec, zero_point, block_size, across=False)
    outcome = _outcome(coded, weights, stats, view=view, axis=axis, block_size=block_size,
                       plain=plain)  # fmt: skip
    before = _block_error(stats, g.rows_of(plain.quantized.dequantized), block_size, rows)
    after = _block_error(stats, g.rows_of(outcome.quantized.dequantized), block_size, rows)
    if not after < before:
        return plain, "flat-input gptq: kept plain rounding (no lower error on flat inputs)"
    gain = 10.0 * np.log10(before / after) if after > 0 else math.inf
    return outcome, (f"flat-input gptq: layer output error {gain:.1f} dB below plain rounding "
                     f"on flat inputs ({stats.count} rows, within blocks of {block_size})")


def _outcome(
    coded: _Coded, weights: np.ndarray, stats: LayerStats, *, view: tuple[int, ...], axis: int,
    block_size: int, plain: GroupOutcome,
) -> GroupOutcome:
    """``coded`` as the group quantizer's outcome, in the weight's own layout."""
    g = stats.geometry
    original = np.asarray(weights, np.float32)
    transposed = not (g.op == "Conv" or (g.op == "Gemm" and g.trans_b))

    def layout(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T) if transposed else a

    shape = tuple(int(d) for d in weights.shape)
    codes = layout(coded.codes).reshape(shape)
    decoder = BlockDecoder(
        scale=layout(coded.scale).reshape(_scale_shape(view, axis, block_size)), view=view,
        axis=axis, block_size=block_size,
        zero_point=None if coded.zero_point is None else layout(coded.zero_point).reshape(
            _scale_shape(view, axis, block_size)),
    )  # fmt: skip
    dequantized = decode(codes, decoder)
    error = dequantized.astype(np.float64)  # one float64 array: the same differences
    error -= original
    error = error.ravel()
    quantized = QuantizedTensor(
        codes=codes, code_min=plain.quantized.code_min, code_max=plain.quantized.code_max,
        decoder=decoder, dequantized=dequantized,
    )  # fmt: skip
    return GroupOutcome(
        quantized=quantized, noise=float(error @ error),
        counts=groups_module._counts(codes, quantized.code_min, quantized.code_max),
        inside=plain.inside, xmax=plain.xmax, xmax_abs=plain.xmax_abs, theory_db=plain.theory_db,
    )  # fmt: skip


def _scale_shape(view: tuple[int, ...], axis: int, block_size: int) -> tuple[int, ...]:
    return (*view[:axis], -(-view[axis] // block_size), *view[axis + 1 :])
