"""The chunked kernel that applies a ``Design`` to a tensor with its statistics in one pass.

For every chunk of about ``CHUNK`` weights (cache-sized; whole channels for per-channel
quantization) it computes, into preallocated buffers:

    t = w·gain + shift                   (float32; float64 for float64 weights)
    inside += #{|t| ≤ support_edge}      (weights within the support region)
    codes  = design.encode(t)            (int8/int16/uint8/uint16)
    ŵ      = value(codes)·scale + offset (float32, exactly as ``quantized.decode`` computes)
    noise += Σ (w - ŵ)²                  (float64 accumulator)
    counts += bincount(codes)            (levels used, entropy)

``gain = 1/(unit·s)`` and ``shift = -centre·gain`` put the normalisation (``centre``, ``s``)
and the family's unit into one multiply-add; ``scale = unit·s`` and ``offset = centre (+ half
step)`` undo it in the decoder. A zero ``unit·s`` (constant tensor or channel) gives gain 0:
every weight takes the code of ``t = 0`` and decodes to the centre plus that code's level times
a zero scale, i.e. exactly the centre.

Temporaries: three chunk buffers; the outputs (codes and dequantized weights) are the only
full-size allocations.

Each chunk runs through the compiled kernel of ``quantcore.quantizers.kernels`` (the same
operations in the same precision, so the same bits); ``USE_KERNELS = False`` runs the NumPy
operations above instead, the reference the tests compare the kernel with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from quantcore.errors import InvalidSpecError
from quantcore.quantizers.base import Design, gain_of
from quantcore.quantizers.codes import (
    AffineDecoder,
    CodebookDecoder,
    QuantizedTensor,
)
from quantcore.quantizers.families import design as design_for
from quantcore.quantizers.stats import CountArray, code_counts
from quantcore.spec import QuantizerSpec

if TYPE_CHECKING:
    from quantcore.quantizers.kernel_args import KernelArgs

CHUNK = 1 << 18
# False: every chunk takes the NumPy path (the reference the compiled kernel is tested against).
USE_KERNELS = True
# The decoders a whole-tensor or per-channel design produces (blocks: compress.groups).
StreamDecoder = AffineDecoder | CodebookDecoder


@dataclass(frozen=True, kw_only=True)
class StreamResult:
    """A quantized tensor and the sums gathered while producing it."""

    quantized: QuantizedTensor
    noise: float  # Σ (w - ŵ)² over the tensor, float64
    inside: int  # weights with |t| ≤ support_edge
    counts: CountArray  # bincount of the codes' unsigned bit patterns


@dataclass(frozen=True, kw_only=True)
class FamilyResult:
    """``quantize``'s answer: the quantized tensor, the design used and what happened."""

    quantized: QuantizedTensor
    design: Design
    notes: tuple[str, ...]


def _as_float32(values: npt.ArrayLike) -> npt.NDArray[np.float32]:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def decoder_for(
    design: Design, *, step: np.ndarray, centre: np.ndarray, axis: int | None
) -> StreamDecoder:
    """The decoder of ``design`` with ``step = unit·s`` and the normalisation ``centre``."""
    scale = _as_float32(step)
    if design.levels is None:
        offset = _as_float32(np.asarray(centre) + design.half * np.asarray(step))
        return AffineDecoder(scale=scale, offset=offset, axis=axis)
    return CodebookDecoder(levels=design.levels, scale=scale, offset=_as_float32(centre), axis=axis)


def _sum_squares(err: np.ndarray) -> float:
    """``Σ err²``: float32 errors' dot product, redone in float64 where it overflows (errors
    past ~1.8e19, from weights that large; float32 squares would make the noise inf)."""
    with np.errstate(over="ignore"):
        total = float(np.dot(err, err))
    if math.isfinite(total):
        return total
    wide = err.astype(np.float64)
    return float(np.dot(wide, wide))


@dataclass(frozen=True, kw_only=True)
class _Affine:
    """``t = w·gain + shift`` and ``ŵ = value·scale + offset``: scalars or one per channel."""

    gain: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    @classmethod
    def of(
        cls, decoder: StreamDecoder, step: np.ndarray, centre: np.ndarray, dtype: np.dtype
    ) -> _Affine:
        gain = gain_of(step, dtype)
        return cls(
            gain=gain.astype(dtype), shift=(-centre * gain).astype(dtype),
            scale=np.asarray(decoder.scale, np.float32),
            offset=np.asarray(decoder.offset, np.float32),
        )  # fmt: skip

    def rows(self, lo: int, hi: int) -> _Affine:
        """Channels ``lo:hi`` as column vectors, to broadcast over a block of rows."""
        return _Affine(
            gain=self.gain[lo:hi, None], shift=self.shift[lo:hi, None],
            scale=self.scale[lo:hi, None], offset=self.offset[lo:hi, None],
        )  # fmt: skip

    def channel(self, c: int) -> _Affine:
        return _Affine(gain=self.gain[c], shift=self.shift[c], scale=self.scale[c],
                       offset=self.offset[c])  # fmt: skip


def _per_row(values: np.ndarray, dtype: np.dtype, rows: int) -> np.ndarray:
    """One value a row, read only: the caller's array where it already is that (broadcast_to
    and a copy cost 5% of a layer job's 64 chunks)."""
    flat = np.asarray(values, dtype).reshape(-1)
    if flat.size == rows:
        return np.ascontiguousarray(flat)
    if flat.size == 1:
        return np.full(rows, flat[0], dtype)
    return np.ascontiguousarray(np.broadcast_to(flat, (rows,)))  # raises: no fit


class _Kernel:
    """Chunk buffers and the running sums of one tensor (mutable, private to a call)."""

    def __init__(self, design: Design, decoder: StreamDecoder, size: int, source: np.dtype) -> None:
        self.design = design
        self.decoder = decoder
        self.compute = np.dtype(np.float64 if source == np.float64 else np.float32)
        self.t = np.empty(size, self.compute)
        self.mask = np.empty(size, bool)
        self.source = None if source == self.compute else np.empty(size, self.compute)
        self.noise = 0.0
        self.inside = 0
        self.counts = np.zeros(256 if design.dtype.itemsize == 1 else 1 << 16, np.int64)
        self.compiled = None
        if USE_KERNELS:  # numba loads with the first quantization, not with the package
            from quantcore.quantizers.kernel_args import kernel_args

            self.compiled = kernel_args(design, self.compute)

    def _compiled_chunk(
        self, args: KernelArgs, w: np.ndarray, err: np.ndarray, codes: np.ndarray,
        deq: np.ndarray, p: _Affine,
    ) -> None:
        """The same chunk in one compiled pass; the noise is still ``np.dot`` of the errors."""
        from quantcore.quantizers.kernel_args import read_only
        from quantcore.quantizers.kernels import stream_chunk

        rows = 1 if w.ndim == 1 else w.shape[0]
        shape2 = (rows, w.size // max(rows, 1))
        self.inside += int(stream_chunk(  # type: ignore[call-arg]
            read_only(w.reshape(shape2)), _per_row(p.gain, self.compute, rows),
            _per_row(p.shift, self.compute, rows),
            _per_row(p.scale, np.dtype(np.float32), rows),
            _per_row(p.offset, np.dtype(np.float32), rows),
            *args.values, codes.reshape(shape2), deq.reshape(shape2), err.reshape(shape2),
            self.counts,
        ))  # fmt: skip
        self.noise += _sum_squares(err.reshape(-1))

    def across(
        self, w: np.ndarray, codes: np.ndarray, deq: np.ndarray, lo: int, hi: int, block: int,
        p: _Affine, err: np.ndarray,
    ) -> None:
        """Channels ``lo:hi`` of ``w`` (rows × channels) into ``codes`` and ``deq`` (its
        shape) in one compiled pass (``_channels_across``), the noise summed a block of
        ``block`` channels at a time as ``chunk`` sums it; ``err``: scratch."""
        from quantcore.quantizers.across_kernels import stream_across
        from quantcore.quantizers.kernel_args import read_only

        assert self.compiled is not None
        part = p.rows(lo, hi)
        width, per = hi - lo, w.shape[0]
        errors = err[: width * per].reshape(width, per)
        self.inside += int(stream_across(  # type: ignore[call-arg]
            read_only(w), lo, _per_row(part.gain, self.compute, width),
            _per_row(part.shift, self.compute, width),
            _per_row(part.scale, np.dtype(np.float32), width),
            _per_row(part.offset, np.dtype(np.float32), width),
            *self.compiled.values, codes, deq, errors, self.counts,
        ))  # fmt: skip
        for b in range(0, width, block):
            self.noise += _sum_squares(errors[b : b + block].reshape(-1))

    @staticmethod
    def _view(buf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return buf[: math.prod(shape)].reshape(shape)

    def chunk(self, src: np.ndarray, codes: np.ndarray, deq: np.ndarray, p: _Affine) -> None:
        """One chunk (1-D, or 2-D channels × weights) into ``codes`` and ``deq``."""
        shape = src.shape
        w = src
        if self.source is not None:
            w = self._view(self.source, shape)
            w[...] = src
        t = self._view(self.t, shape)
        if self.compiled is not None:
            self._compiled_chunk(self.compiled, w, t, codes, deq, p)
            return
        # Far overload may reach ±inf in float32; every family maps it to its outermost level.
        with np.errstate(over="ignore"):
            np.multiply(w, p.gain, out=t)
            t += p.shift
        mask = self._view(self.mask, shape)
        np.less_equal(np.abs(t, out=deq), self.design.support_edge, out=mask)
        self.inside += int(np.count_nonzero(mask))
        self.design.encode(t, codes)
        if isinstance(self.decoder, AffineDecoder):
            np.multiply(codes, p.scale, out=deq)
        else:
            np.take(self.decoder.levels, codes, out=deq)
            deq *= p.scale
        deq += p.offset
        err = np.subtract(w, deq, out=t).reshape(-1)
        self.noise += _sum_squares(err)
        self.counts += code_counts(codes)

    def run(self, src: np.ndarray, codes: np.ndarray, deq: np.ndarray, p: _Affine) -> None:
        """A 1-D run of weights sharing one quantizer, chunk by chunk (1-D outputs)."""
        for lo in range(0, src.size, CHUNK):
            hi = min(lo + CHUNK, src.size)
            self.chunk(src[lo:hi], codes[lo:hi], deq[lo:hi], p)


def _channels(
    kernel: _Kernel, weights: np.ndarray, codes: np.ndarray, deq: np.ndarray, axis: int,
    p: _Affine,
) -> None:
    """Blocks of whole channels (broadcast parameters), or chunks within channels too large."""
    view = np.moveaxis(weights, axis, 0)
    code_view = np.moveaxis(codes, axis, 0)
    deq_view = np.moveaxis(deq, axis, 0)
    channels = view.shape[0]
    per = view[0].size if channels else 0
    if per > CHUNK:
        channel_codes = np.empty(per, codes.dtype)
        channel_deq = np.empty(per, np.float32)
        for c in range(channels):
            kernel.run(view[c].reshape(-1), channel_codes, channel_deq, p.channel(c))
            code_view[c] = channel_codes.reshape(code_view[c].shape)
            deq_view[c] = channel_deq.reshape(deq_view[c].shape)
        return
    block = max(1, CHUNK // max(per, 1))
    if view.ndim == 2 and _across(view[:block], kernel):
        _channels_across(kernel, weights, codes, deq, block, p)
        return
    # Channels on the first axis of C-ordered outputs: each block's rows are written in place
    # (copying them from a block buffer was an eighth of a channel job).
    direct = axis == 0 and codes.flags.c_contiguous and deq.flags.c_contiguous
    for lo in range(0, channels, block):
        hi = min(lo + block, channels)
        rows = view[lo:hi].reshape(hi - lo, per)
        if direct:
            kernel.chunk(rows, codes[lo:hi].reshape(rows.shape), deq[lo:hi].reshape(rows.shape),
                         p.rows(lo, hi))  # fmt: skip
            continue
        block_codes = np.empty(rows.shape, codes.dtype)
        block_deq = np.empty(rows.shape, np.float32)
        kernel.chunk(rows, block_codes, block_deq, p.rows(lo, hi))
        code_view[lo:hi] = block_codes.reshape(code_view[lo:hi].shape)
        deq_view[lo:hi] = block_deq.reshape(deq_view[lo:hi].shape)


# Channels across the rows: blocks of them a kernel call, up to this many channels (a row's
# run of each is then several cache lines long) and errors of up to this many chunks.
_ACROSS_WIDTH = 512
_ACROSS_CHUNKS = 8


def _channels_across(
    kernel: _Kernel, weights: np.ndarray, codes: np.ndarray, deq: np.ndarray, block: int,
    p: _Affine,
) -> None:
    """Channels across the rows of a 2-D weight (a MatMul's output axis), read and written
    where they lie (``across_kernels``), several of ``_channels``' blocks a call: the same
    blocks, so the same sums. Read as ``_channels`` reads a block's rows, each channel's
    weights sat a row apart, a page each (4096 × 4096 at 8 bits: 14 ns a weight against 1);
    copied to rows and back, the copies were half the job."""
    per, channels = weights.shape
    weights = np.ascontiguousarray(weights)  # the kernel reads it flat (a copy: rarely)
    group = max(1, min(-(-_ACROSS_WIDTH // block), _ACROSS_CHUNKS * CHUNK // (block * per)))
    err = np.empty(group * block * per, kernel.compute)
    for lo in range(0, channels, group * block):
        hi = min(lo + group * block, channels)
        kernel.across(weights, codes, deq, lo, hi, block, p, err)


def _across(rows: np.ndarray, kernel: _Kernel) -> bool:
    """Whether ``rows``, the first block of channels of a 2-D weight, has its channels on its
    contiguous axis (the compiled path only, and not float16, which numba does not
    compile)."""
    return (kernel.compiled is not None
            and rows.dtype in (np.float32, np.float64) and rows.shape[1] > 1
            and rows.strides[0] == rows.itemsize and rows.strides[1] > rows.itemsize)  # fmt: skip


def encode_tensor(
    weights: np.ndarray,
    design: Design,
    *,
    step: float | np.ndarray,
    centre: float | np.ndarray,
    axis: int | None = None,
) -> StreamResult:
    """Quantize ``weights`` with ``design``; ``step``, ``centre``: scalars or one per channel.

    ``step`` is ``unit·s`` in the weights' units (Δ times the std for uniform quantizers).
    """
    step_arr = np.asarray(step, np.float64)
    centre_arr = np.asarray(centre, np.float64)
    decoder = decoder_for(design, step=step_arr, centre=centre_arr, axis=axis)
    codes = np.empty(weights.shape, design.dtype)
    deq = np.empty(weights.shape, np.float32)
    # Blocks of whole channels and chunks within channels both hold at most CHUNK weights.
    kernel = _Kernel(design, decoder, min(CHUNK, max(weights.size, 1)), weights.dtype)
    params = _Affine.of(decoder, step_arr, centre_arr, kernel.compute)
    if axis is None:
        kernel.run(weights.reshape(-1), codes.reshape(-1), deq.reshape(-1), params)
    else:
        _channels(kernel, weights, codes, deq, axis, params)
    quantized = QuantizedTensor(
        codes=codes, code_min=design.code_min, code_max=design.code_max, decoder=decoder,
        dequantized=deq,
    )  # fmt: skip
    return StreamResult(
        quantized=quantized, noise=kernel.noise, inside=kernel.inside, counts=kernel.counts
    )

def quantize(x: np.ndarray, spec: QuantizerSpec, xmax: float) -> FamilyResult:
    """Quantize normalised weights ``x`` with the family of ``spec`` (resolved) at ``xmax``.

    ``xmax`` is the support threshold in the units of ``x`` (> 0). The result's decoder maps
    codes straight to ``x``'s units (scale ``unit``, offset 0 or half a step); ``decode``
    reproduces ``dequantized`` bit for bit. A constant ``x`` is quantized like any other.
    """
    if not (math.isfinite(xmax) and xmax > 0):
        raise InvalidSpecError(f"{xmax=} must be finite and greater than 0")
    design = design_for(spec.resolved(), np.asarray(x, np.float64).reshape(-1) / xmax)
    x = np.asarray(x)
    result = encode_tensor(x, design, step=design.unit(xmax), centre=0.0)
    notes = design.notes
    if x.dtype != np.float32:
        compute = "float64" if x.dtype == np.float64 else "float32"
        notes += (f"{x.dtype} weights: quantized in {compute}, dequantized weights are float32",)
    if x.size and float(np.min(x)) == float(np.max(x)):
        notes += ("constant weights: every weight takes the same code",)
    return FamilyResult(quantized=result.quantized, design=design, notes=notes)
