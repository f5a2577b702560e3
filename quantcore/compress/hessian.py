"""What a layer's inputs say about its weight's error: ``H = XᵀX`` and ``E[x]`` per layer.

A Conv/MatMul/Gemm output is ``y = W x`` row by row, with ``x`` a row of the input (MatMul,
Gemm) or an im2col patch (Conv: the window of every input channel of the group, in the
kernel's own order ``(c, ky, kx)``, zeros where it overlaps the padding). A weight error
``ΔW`` changes the output by ``ΔW x``: its energy over the calibration rows is
``tr(ΔW H ΔWᵀ)`` with ``H = Σ x xᵀ``, and its mean is ``ΔW E[x]``. GPTQ (``gptq.py``) rounds
against ``H``; bias correction removes ``ΔW E[x]``.

Layers are described by ``Geometry`` in the weight's own layout: ``rows`` output channels,
each summing ``k`` inputs (per group: a grouped or depthwise Conv has ``groups`` Hessians,
one per group of ``rows // groups`` output channels, each ``k x k``). ``Accumulator.add``
takes one batch of the layer's input as onnxruntime computed it; rows are sampled (fixed
seed) to at most ``max_rows`` per batch (the caller spreads ``row_target`` over its
batches), so the cost is bounded whatever the spatial size, and ``H`` is summed in float64.
With ``block``, only ``H``'s diagonal blocks are summed and kept (GPTQ on flat inputs reads no
others): ``groups·k·block`` floats where the whole ``H`` would take ``groups·k²``, which
nudenet's convolutions of 2304 inputs faulted in as 42 MB a matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Rows summed per layer over the whole calibration set: at least ROWS_PER_INPUT·K (GPTQ
# needs a few rows per input), else as many as ROW_FLOPS of XᵀX allow, within
# [MIN_ROWS, MAX_ROWS]; the mean alone (bias correction) takes MIN_ROWS.
ROWS_PER_INPUT = 4
ROW_FLOPS = 2e10
# GPTQ fits the rounding to the calibration rows: with fewer rows than this many times the
# inputs per output (a 1x1 Conv after a global pool sees one row per sample) it fits their
# noise, and the layer is rounded plainly (``gptq.py``), so its ``H`` is not summed until
# that many rows are in (``Accumulator.needed_rows``).
MIN_ROWS_PER_INPUT = 2
MIN_ROWS = 4096
MAX_ROWS = 32768


def row_target(k: int, hessian: bool) -> int:
    """Rows to sum for a layer of ``k`` inputs per output (see the constants above)."""
    if not hessian:
        return MIN_ROWS
    return max(ROWS_PER_INPUT * k, min(MAX_ROWS, max(MIN_ROWS, int(ROW_FLOPS // (k * k)))))


@dataclass(frozen=True, kw_only=True)
class Geometry:
    """How a weight meets its input (see the module docstring)."""

    op: str  # "Conv", "MatMul" or "Gemm"
    rows: int  # output channels (Conv O, MatMul/Gemm N)
    k: int  # inputs summed per output, per group
    groups: int = 1
    kernel: tuple[int, ...] = ()  # Conv: spatial kernel shape
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()  # begins then ends, as ONNX
    dilations: tuple[int, ...] = ()
    auto_pad: str = "NOTSET"
    trans_a: bool = False  # Gemm: A is (K, M)
    trans_b: bool = False  # Gemm: B is (N, K); else (K, N) as MatMul
    alpha: float = 1.0  # Gemm's factor on A·B

    def rows_of(self, weights: np.ndarray) -> np.ndarray:
        """``weights`` as ``(groups, rows // groups, k)``: each output channel's inputs in
        the order of ``x`` (a view or a transposed copy)."""
        if self.op == "Conv" or (self.op == "Gemm" and self.trans_b):
            flat = weights.reshape(self.rows, -1)
        else:
            flat = weights.reshape(self.k, self.rows).T
        return flat.reshape(self.groups, self.rows // self.groups, self.k)

    def from_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The inverse of ``rows_of``: back to the weight's own layout and ``shape``."""
        flat = rows.reshape(self.rows, self.k)
        if self.op == "Conv" or (self.op == "Gemm" and self.trans_b):
            return flat.reshape(shape)
        return np.ascontiguousarray(flat.T).reshape(shape)


@dataclass(kw_only=True)
class LayerStats:
    """Sums over the calibration rows: ``hessian`` (groups, k, k) over ``count`` sampled
    rows, ``total`` (groups, k) over all ``seen`` rows (the mean is exact). With ``block``,
    ``hessian`` (and ``half``) hold the diagonal blocks alone, (groups, blocks, block, block),
    the last block zero past ``k``: read them through ``diagonal``."""

    geometry: Geometry
    hessian: np.ndarray
    total: np.ndarray
    count: int = 0
    seen: int = 0
    # The part of ``hessian`` from the first half of the samples (even samples of each batch,
    # or every other batch of one sample), and its rows: GPTQ fits on one half and checks on
    # the other (``gptq.py``).
    half: np.ndarray | None = None
    half_count: int = 0
    half_total: np.ndarray | None = None  # Σx over the first half's ``half_seen`` rows
    half_seen: int = 0
    # Captured on flat inputs (``quantcore.evaluate.flat``), not on samples: GPTQ takes one
    # damping and any number of rows (there is no sample noise to fit or hold out).
    flat: bool = False
    # The dampings GPTQ chooses among on the held-out half (None: ``gptq.DAMPS``).
    damps: tuple[float, ...] | None = None
    block: int = 0  # > 0: only ``hessian``'s diagonal blocks of this size are summed

    def diagonal(self, lo: int, hi: int) -> np.ndarray:
        """``H[lo:hi, lo:hi]`` per group, a view; with ``block``, within one summed block."""
        if not self.block:
            return self.hessian[:, lo:hi, lo:hi]
        index, at = divmod(lo, self.block)
        end = at + hi - lo
        if end > self.block:
            raise ValueError(f"columns {lo}:{hi} cross a summed block of {self.block}")
        return self.hessian[:, index, at:end, at:end]

    def halves_mean(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The inputs' mean over each half of the samples (None if one half is empty)."""
        rest = self.seen - self.half_seen
        if self.half_total is None or self.half_seen == 0 or rest == 0:
            return None
        return self.half_total / self.half_seen, (self.total - self.half_total) / rest

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.seen, 1)


def _same_pads(size: int, k: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def _window(x: np.ndarray, g: Geometry) -> tuple[np.ndarray, tuple[int, ...], int, int]:
    """A Conv input padded as the node pads it (a 1-D one as 2-D of height 1), with the
    kernel's (kh, kw, sh, sw, dh, dw) and the output's height and width."""
    if len(g.kernel) == 1:
        x = x[:, :, None, :]
        g = Geometry(op="Conv", rows=g.rows, k=g.k, groups=g.groups, kernel=(1, *g.kernel),
                     strides=(1, *g.strides), pads=(0, g.pads[0], 0, g.pads[1]),
                     dilations=(1, *g.dilations), auto_pad=g.auto_pad)  # fmt: skip
    h, w = x.shape[2:]
    (kh, kw), (sh, sw), (dh, dw) = g.kernel, g.strides, g.dilations
    if g.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        upper = g.auto_pad == "SAME_UPPER"
        top, bottom = _same_pads(h, kh, sh, dh, upper)
        left, right = _same_pads(w, kw, sw, dw, upper)
    elif g.auto_pad == "VALID":
        top = bottom = left = right = 0
    else:
        top, left, bottom, right = g.pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = max((h + top + bottom - (kh - 1) * dh - 1) // sh + 1, 0)
    ow = max((w + left + right - (kw - 1) * dw - 1) // sw + 1, 0)
    return xp, (kh, kw, sh, sw, dh, dw), oh, ow


def _patch_sums(x: np.ndarray, g: Geometry) -> tuple[np.ndarray, int]:
    """The sum of every im2col row of a Conv input (all positions, no sampling) and their
    count: one strided slice per kernel offset."""
    xp, (kh, kw, sh, sw, dh, dw), oh, ow = _window(x, g)
    sums = np.zeros((xp.shape[1], kh, kw))
    for ky in range(kh):
        for kx in range(kw):
            part = xp[:, :, ky * dh : ky * dh + (oh - 1) * sh + 1 : sh,
                      kx * dw : kx * dw + (ow - 1) * sw + 1 : sw]  # fmt: skip
            sums[:, ky, kx] = part.sum(axis=(0, 2, 3), dtype=np.float64)
    return sums.reshape(-1), xp.shape[0] * oh * ow


def _patches(x: np.ndarray, g: Geometry, rng: np.random.Generator, limit: int) -> np.ndarray:
    """Sampled im2col rows of a Conv input ``x`` (N, C, *spatial), shape (P, C·prod(kernel)).

    Read through a strided view of every window (no copy), indexed by the sampled positions
    only: indexing the padded input by four broadcast (P, C, kh·kw) index arrays took 4.4x
    as long, most of a real OCR model's capture."""
    xp, (kh, kw, sh, sw, dh, dw), oh, ow = _window(x, g)
    n, c = xp.shape[:2]
    total = n * oh * ow
    if total <= 0:
        return np.zeros((0, c * kh * kw), np.float32)
    pick = np.arange(total) if total <= limit else rng.choice(total, size=limit, replace=False)
    b, rest = np.divmod(pick, oh * ow)
    oy, ox = np.divmod(rest, ow)
    windows = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, oh, ow, kh, kw)
    cols = windows[b, :, oy, ox]  # (P, C, kh, kw): the sampled axes go first
    return cols.reshape(len(pick), c * kh * kw).astype(np.float32, copy=False)


def _rows(x: np.ndarray, g: Geometry, rng: np.random.Generator, limit: int) -> np.ndarray:
    """The layer's input rows ``x`` (each of groups·k values), sampled to ``limit``."""
    if g.op == "Conv":
        return _patches(x, g, rng, limit)
    if g.op == "Gemm" and g.trans_a:
        x = x.T
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] > limit:
        flat = flat[np.sort(rng.choice(flat.shape[0], size=limit, replace=False))]
    return flat.astype(np.float32, copy=False)


@dataclass(kw_only=True)
class Accumulator:
    """Sums ``H`` and ``Σx`` over batches for one layer (module docstring)."""

    geometry: Geometry
    max_rows: int = MIN_ROWS
    seed: int = 0
    hessian: bool = True  # False: the mean only (bias correction needs no H)
    block: int = 0  # > 0: sum only H's diagonal blocks of this size (k·block, not k², a row)
    # Rows below which ``H`` goes unused (``MIN_ROWS_PER_INPUT·k`` for GPTQ on samples): the
    # sampled rows are kept until the count reaches it, then their products summed in the
    # order they came, the very sums; a layer that never gets there costs no products
    # (minilm-l3's FFN outputs, 1536 inputs on 2048 synthetic rows: 0.3 s of 0.5 s).
    needed_rows: int = 0
    stats: LayerStats = field(init=False)
    _rng: np.random.Generator = field(init=False)
    _batches: int = field(init=False, default=0)
    _waiting: list[tuple[np.ndarray, bool]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        g = self.geometry
        block = self.block if 0 < self.block < g.k else 0
        size: tuple[int, ...]
        if not self.hessian:
            size = (g.groups, 0, 0)
        elif block:  # the diagonal blocks alone, the last padded to a whole block
            size = (g.groups, -(-g.k // block), block, block)
        else:
            size = (g.groups, g.k, g.k)
        self.stats = LayerStats(
            geometry=g, hessian=np.zeros(size), total=np.zeros((g.groups, g.k)),
            half=np.zeros(size) if self.hessian else None, half_total=np.zeros((g.groups, g.k)),
            block=block,
        )  # fmt: skip
        self._batches = 0
        self._rng = np.random.default_rng(self.seed)
        self._waiting = [] if self.hessian and not block and self.needed_rows > 0 else None

    def add(self, x: np.ndarray) -> None:
        g = self.geometry
        x = np.asarray(x, np.float32)
        batch_axis = 1 if g.op == "Gemm" and g.trans_a else 0
        halves: list[np.ndarray | None]
        if x.shape[batch_axis] >= 2:
            halves = [np.take(x, np.arange(i, x.shape[batch_axis], 2), axis=batch_axis)
                      for i in (0, 1)]  # fmt: skip
        else:  # one sample per batch: batches alternate between the halves
            halves = [x, None] if self._batches % 2 == 0 else [None, x]
        self._batches += 1
        for first, part in zip((True, False), halves, strict=True):
            if part is not None:
                self._add_half(part, first)

    def _add_half(self, x: np.ndarray, first: bool) -> None:
        g, stats = self.geometry, self.stats
        if g.op == "Conv":
            sums, seen = _patch_sums(x, g)
        else:
            flat = (x.T if g.op == "Gemm" and g.trans_a else x).reshape(-1, x.shape[-1])
            sums, seen = flat.sum(axis=0, dtype=np.float64), flat.shape[0]
        if sums.shape[0] != g.groups * g.k:
            raise ValueError(f"input rows of {sums.shape[0]} values, expected {g.groups * g.k}")
        stats.total += sums.reshape(g.groups, g.k)
        stats.seen += seen
        if first:
            stats.half_total += sums.reshape(g.groups, g.k)
            stats.half_seen += seen
        if not self.hessian:
            return
        rows = _rows(x, g, self._rng, max(1, self.max_rows // 2))
        if stats.block:
            self._add_blocks(rows, first)
            return
        stats.count += rows.shape[0]
        if first:
            stats.half_count += rows.shape[0]
        if self._waiting is None:
            self._add_products(rows, first)
            return
        # A copy: a batch of one sample is not split, and its rows may view onnxruntime's
        # output, which the next batch can reuse.
        self._waiting.append((np.array(rows, copy=True), first))
        if stats.count >= self.needed_rows:
            for part, in_first in self._waiting:
                self._add_products(part, in_first)
            self._waiting = None

    def _add_products(self, rows: np.ndarray, first: bool) -> None:
        g, stats = self.geometry, self.stats
        if g.groups == 1:
            product = (rows.T @ rows)[None]  # numpy's syrk: half the products
        else:
            per_group = rows.reshape(rows.shape[0], g.groups, g.k).transpose(1, 0, 2)
            product = np.matmul(per_group.transpose(0, 2, 1), per_group)
        stats.hessian += product
        if first and stats.half is not None:
            stats.half += product

    def _add_blocks(self, rows: np.ndarray, first: bool) -> None:
        """``_add_half``'s sums on the diagonal blocks of ``H`` only (``LayerStats.block``)."""
        g, stats = self.geometry, self.stats
        per_group = rows.reshape(rows.shape[0], g.groups, g.k).transpose(1, 0, 2)
        for index, lo in enumerate(range(0, g.k, stats.block)):
            n = min(stats.block, g.k - lo)
            part = per_group[:, :, lo : lo + n]
            product = np.matmul(part.transpose(0, 2, 1), part)
            stats.hessian[:, index, :n, :n] += product
            if first and stats.half is not None:
                stats.half[:, index, :n, :n] += product
        stats.count += rows.shape[0]
        if first:
            stats.half_count += rows.shape[0]


def hessian_bytes(g: Geometry) -> int:
    """Memory of one layer's float64 Hessian."""
    return 8 * g.groups * g.k * g.k


def within(g: Geometry, max_k: int) -> bool:
    return g.k <= max_k and math.prod((g.groups, g.k, g.k)) <= 4 * max_k * max_k
