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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcore.errors import InvalidSpecError
from quantcore.metrics import CountArray, code_counts
from quantcore.quantized import (
    AffineDecoder,
    CodebookDecoder,
    Decoder,
    QuantizedTensor,
)
from quantcore.quantizers.base import Design
from quantcore.quantizers.families import design as design_for
from quantcore.spec import QuantizerSpec

CHUNK = 1 << 18


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
) -> Decoder:
    """The decoder of ``design`` with ``step = unit·s`` and the normalisation ``centre``."""
    scale = _as_float32(step)
    if design.levels is None:
        offset = _as_float32(np.asarray(centre) + design.half * np.asarray(step))
        return AffineDecoder(scale=scale, offset=offset, axis=axis)
    return CodebookDecoder(levels=design.levels, scale=scale, offset=_as_float32(centre), axis=axis)


def _gains(step: np.ndarray, centre: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    step64 = np.asarray(step, np.float64)
    with np.errstate(divide="ignore"):
        gain = np.where(step64 > 0, 1.0 / np.where(step64 > 0, step64, 1.0), 0.0)
    shift = -np.asarray(centre, np.float64) * gain
    return gain.astype(dtype), shift.astype(dtype)


class _Buffers:
    def __init__(self, size: int, compute: np.dtype, source: np.dtype) -> None:
        self.t = np.empty(size, compute)
        self.mask = np.empty(size, bool)
        self.source = None if source == compute else np.empty(size, compute)

    def view(self, buf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return buf[: int(np.prod(shape))].reshape(shape)


def _chunk(
    src: np.ndarray,
    design: Design,
    gain: np.ndarray,
    shift: np.ndarray,
    decoder: Decoder,
    codes: np.ndarray,
    deq: np.ndarray,
    buffers: _Buffers,
    scale: np.ndarray,
    offset: np.ndarray,
) -> tuple[float, int]:
    """Process one chunk (1-D, or 2-D channels × weights); return (noise, inside)."""
    shape = src.shape
    if buffers.source is not None:
        w = buffers.view(buffers.source, shape)
        w[...] = src
    else:
        w = src
    t = buffers.view(buffers.t, shape)
    # Far overload may reach ±inf in float32; every family maps it to its outermost level.
    with np.errstate(over="ignore"):
        np.multiply(w, gain, out=t)
        t += shift
    mask = buffers.view(buffers.mask, shape)
    np.less_equal(np.abs(t, out=deq), design.support_edge, out=mask)
    inside = int(np.count_nonzero(mask))
    design.encode(t, codes)
    if isinstance(decoder, AffineDecoder):
        np.multiply(codes, scale, out=deq)
    else:
        np.take(decoder.levels, codes, out=deq)
        deq *= scale
    deq += offset
    err = np.subtract(w, deq, out=t)
    flat = err.reshape(-1)
    return float(np.dot(flat, flat)), inside


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
    compute = np.dtype(np.float64 if weights.dtype == np.float64 else np.float32)
    step_arr = np.asarray(step, np.float64)
    centre_arr = np.asarray(centre, np.float64)
    decoder = decoder_for(design, step=step_arr, centre=centre_arr, axis=axis)
    gain, shift = _gains(step_arr, centre_arr, compute)
    codes = np.empty(weights.shape, design.dtype)
    deq = np.empty(weights.shape, np.float32)
    counts = np.zeros(256 if design.dtype.itemsize == 1 else 1 << 16, np.int64)
    scale = np.asarray(decoder.scale, np.float32)
    offset = np.asarray(decoder.offset, np.float32)
    if axis is None:
        buffers = _Buffers(min(CHUNK, max(weights.size, 1)), compute, weights.dtype)
        noise, inside = _flat_pass(
            weights.reshape(-1), codes.reshape(-1), deq.reshape(-1), counts, buffers,
            design, decoder, (gain, shift, scale, offset),
        )  # fmt: skip
    else:
        noise, inside = _channel_pass(
            weights, codes, deq, counts, axis, design, decoder, (gain, shift, scale, offset),
            compute,
        )  # fmt: skip
    quantized = QuantizedTensor(
        codes=codes,
        code_min=design.code_min,
        code_max=design.code_max,
        decoder=decoder,
        dequantized=deq,
    )
    return StreamResult(quantized=quantized, noise=noise, inside=inside, counts=counts)


Params = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # gain, shift, scale, offset


def _flat_pass(
    src: np.ndarray, codes: np.ndarray, deq: np.ndarray, counts: CountArray,
    buffers: _Buffers, design: Design, decoder: Decoder, params: Params,
) -> tuple[float, int]:
    """Chunks of a 1-D run of weights sharing one quantizer; ``codes``/``deq`` are 1-D views."""
    gain, shift, scale, offset = params
    noise = 0.0
    inside = 0
    for lo in range(0, src.size, CHUNK):
        hi = min(lo + CHUNK, src.size)
        n, k = _chunk(src[lo:hi], design, gain, shift, decoder, codes[lo:hi], deq[lo:hi],
                      buffers, scale, offset)  # fmt: skip
        noise += n
        inside += k
        counts += code_counts(codes[lo:hi])
    return noise, inside


def _channel_pass(
    weights: np.ndarray, codes: np.ndarray, deq: np.ndarray, counts: CountArray, axis: int,
    design: Design, decoder: Decoder, params: Params, compute: np.dtype,
) -> tuple[float, int]:
    """Blocks of whole channels (broadcast parameters), or chunks within channels too large."""
    gain, shift, scale, offset = params
    view = np.moveaxis(weights, axis, 0)
    code_view = np.moveaxis(codes, axis, 0)
    deq_view = np.moveaxis(deq, axis, 0)
    channels = view.shape[0]
    per_channel = view[0].size if channels else 0
    noise = 0.0
    inside = 0
    if per_channel > CHUNK:
        buffers = _Buffers(CHUNK, compute, weights.dtype)
        channel_codes = np.empty(per_channel, design.dtype)
        channel_deq = np.empty(per_channel, np.float32)
        for c in range(channels):
            n, k = _flat_pass(
                view[c].reshape(-1), channel_codes, channel_deq, counts, buffers, design,
                decoder, (gain[c], shift[c], scale[c], offset[c]),
            )  # fmt: skip
            code_view[c] = channel_codes.reshape(code_view[c].shape)
            deq_view[c] = channel_deq.reshape(deq_view[c].shape)
            noise += n
            inside += k
        return noise, inside
    block = max(1, CHUNK // max(per_channel, 1))
    buffers = _Buffers(block * per_channel, compute, weights.dtype)
    for lo in range(0, channels, block):
        hi = min(lo + block, channels)
        rows = view[lo:hi].reshape(hi - lo, per_channel)
        block_codes = np.empty(rows.shape, design.dtype)
        block_deq = np.empty(rows.shape, np.float32)
        n, k = _chunk(rows, design, gain[lo:hi, None], shift[lo:hi, None], decoder,
                      block_codes, block_deq, buffers, scale[lo:hi, None],
                      offset[lo:hi, None])  # fmt: skip
        code_view[lo:hi] = block_codes.reshape(code_view[lo:hi].shape)
        deq_view[lo:hi] = block_deq.reshape(deq_view[lo:hi].shape)
        noise += n
        inside += k
        counts += code_counts(block_codes)
    return noise, inside


def quantize(x: np.ndarray, spec: QuantizerSpec, xmax: float) -> FamilyResult:
    """Quantize normalised weights ``x`` with the family of ``spec`` (resolved) at ``xmax``.

    ``xmax`` is the support threshold in the units of ``x`` (> 0). The result's decoder maps
    codes straight to ``x``'s units (scale ``unit``, offset 0 or half a step); ``decode``
    reproduces ``dequantized`` bit for bit. A constant ``x`` is quantized like any other.
    """
    if not (math.isfinite(xmax) and xmax > 0):
        raise InvalidSpecError(f"{xmax=} must be finite and greater than 0")
    design = design_for(spec.resolved(), np.asarray(x, np.float64).reshape(-1) / xmax)
    result = encode_tensor(np.asarray(x), design, step=design.unit(xmax), centre=0.0)
    return FamilyResult(quantized=result.quantized, design=design, notes=design.notes)
