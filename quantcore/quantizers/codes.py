"""What a quantizer hands back: integer codes and the exact rule that turns them into weights.

Two decoders cover every method, and each maps to a few ONNX operators, so that the weights
onnxruntime computes from ``model.onnx`` are bit for bit the ones ``decode`` computes here:

- ``AffineDecoder`` (uniform midrise/midtread): ``w = float32(code) * scale + offset``.
  In ONNX: ``DequantizeLinear(code, scale)`` then ``Add(offset)``. The offset carries the
  normalisation mean (and the half step of a midrise quantizer), which an integer zero point
  cannot hold.
- ``CodebookDecoder`` (dead-zone, mu-law, exponential, minifloat): ``w = levels[code] * scale +
  offset``. In ONNX: ``Gather(levels, Cast(code))``, ``Mul(scale)``, ``Add(offset)``; where the
  scale is one and the offset zero, the two are left out.

``scale`` and ``offset`` are float32 scalars (shape ``()``) or one value per channel along
``axis``. All arithmetic is float32, one rounding per operation, in this order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.integer]


@dataclass(frozen=True, kw_only=True)
class AffineDecoder:
    """``w = float32(code) * scale + offset``; codes are signed integers."""

    scale: FloatArray
    offset: FloatArray
    axis: int | None = None


@dataclass(frozen=True, kw_only=True)
class CodebookDecoder:
    """``w = levels[code] * scale + offset``; codes are indices into ``levels``."""

    levels: FloatArray
    scale: FloatArray
    offset: FloatArray
    axis: int | None = None


@dataclass(frozen=True, kw_only=True)
class BlockDecoder:
    """One scale per block of ``block_size`` weights along ``axis`` (granularity ``group``).

    Blocks are taken in ``view``, a reshape of the codes (a Conv kernel ``(O, I, kh, kw)`` is
    viewed as ``(O, I·kh·kw)`` so that its blocks run over input channels and window; a
    MatMul weight is its own view); the last block along ``axis`` may be shorter. ``scale``
    (float16) and ``zero_point`` have the view's shape with ``ceil(view[axis] / block_size)``
    along ``axis``. A weight is ``(float32(code) - zero_point) * float32(scale)`` (uniform:
    ``levels is None``; no ``zero_point`` for a symmetric grid) or ``levels[code] *
    float32(scale)`` (codebook families). Each product is exact in float32 (a small integer
    times a float16), so ONNX's ``DequantizeLinear`` with ``block_size`` and this function
    agree to the bit.
    """

    scale: npt.NDArray[np.float16]
    view: tuple[int, ...]
    axis: int
    block_size: int
    zero_point: IntArray | None = None
    levels: FloatArray | None = None

    @property
    def offset(self) -> FloatArray:
        return np.zeros((), np.float32)

    def block_index(self) -> npt.NDArray[np.int64]:
        """The block of each position along ``axis``: what expands a scale to the view."""
        return np.arange(self.view[self.axis], dtype=np.int64) // self.block_size


Decoder = AffineDecoder | CodebookDecoder | BlockDecoder


def _per_block(values: np.ndarray, blocks: np.ndarray, size: int, operation: np.ufunc) -> None:
    """``values`` (P, L, Q) ``operation``-ed in place with ``blocks`` (P, ceil(L/size), Q),
    each block's value broadcast over its ``size`` positions (no expanded copy)."""
    length = values.shape[1]
    full = length // size
    if full:
        head = values[:, : full * size].reshape(values.shape[0], full, size, values.shape[2])
        operation(head, blocks[:, :full, None], out=head)
    if full * size < length:
        tail = values[:, full * size :]
        operation(tail, blocks[:, full : full + 1], out=tail)


def _decode_blocks(codes: IntArray, decoder: BlockDecoder) -> FloatArray:
    view, axis = decoder.view, decoder.axis
    shape3 = (math.prod(view[:axis]), view[axis], math.prod(view[axis + 1 :]))
    viewed = codes.reshape(shape3)
    blocks3 = (shape3[0], decoder.scale.shape[axis], shape3[2])
    if decoder.levels is None:
        values = viewed.astype(np.float32)
        if decoder.zero_point is not None:
            zero = decoder.zero_point.astype(np.float32).reshape(blocks3)
            _per_block(values, zero, decoder.block_size, np.subtract)
    else:
        values = np.asarray(decoder.levels, np.float32)[viewed]
    scale = decoder.scale.astype(np.float32).reshape(blocks3)
    _per_block(values, scale, decoder.block_size, np.multiply)
    return values.reshape(codes.shape)


def _along(values: FloatArray, axis: int | None, ndim: int) -> FloatArray:
    """Reshape per-channel ``values`` so that they broadcast along ``axis`` of an ndim array."""
    if axis is None or values.ndim == 0:
        return values
    shape = [1] * ndim
    shape[axis] = values.shape[0]
    return values.reshape(shape)


def decode(codes: IntArray, decoder: Decoder) -> FloatArray:
    """The weights that ``codes`` stand for, computed exactly as the ONNX graph computes them."""
    if isinstance(decoder, BlockDecoder):
        return _decode_blocks(codes, decoder)
    scale = _along(np.asarray(decoder.scale, np.float32), decoder.axis, codes.ndim)
    offset = _along(np.asarray(decoder.offset, np.float32), decoder.axis, codes.ndim)
    if isinstance(decoder, AffineDecoder):
        values = codes.astype(np.float32)
    else:
        values = np.asarray(decoder.levels, np.float32)[codes]
    values *= scale
    values += offset
    return values


@dataclass(frozen=True, kw_only=True)
class QuantizedTensor:
    """One tensor after quantization.

    ``codes`` has the weights' shape; every code lies in ``[code_min, code_max]`` (the range
    the quantizer can emit, which fixes the storage type and the bit-packing width);
    ``dequantized`` equals ``decode(codes, decoder)`` exactly.
    """

    codes: IntArray
    code_min: int
    code_max: int
    decoder: Decoder
    dequantized: FloatArray

    @property
    def code_bits(self) -> int:
        """Bits needed to store one code of this range, offset to start at zero."""
        return max(1, int(self.code_max - self.code_min).bit_length())
