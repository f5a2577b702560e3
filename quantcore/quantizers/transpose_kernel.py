"""Transposing copies in 8 x 8 blocks of vector registers, for the kernels that turn rows into
lanes and back.

Element by element, a transposing copy reads (or writes) one value per row, rows a stride
apart: a scalar loop, and at strides of a power of two of a kilobyte or more its lines fall
on a few cache sets. ``transpose8`` moves an 8 x 8 block with eight vector loads, 24 shuffles
and eight vector stores (LLVM's ``shufflevector``, lowered for AVX2 and AVX-512 alike; any
element type: float32 or float64 weights, integer codes); ``transpose`` copies any block of
rows and columns through it, the edges past a multiple of 8 an element at a time.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from quantcore.jit import intrinsic, njit, types

_I64 = ir.IntType(64)
# The shuffles of an 8 x 8 transpose (as ``_MM_TRANSPOSE8_PS``): pairs of rows interleaved
# within each 128-bit half, then pairs of pairs, then the halves swapped into place.
_INTERLEAVE = ((0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15))
_PAIRS = ((0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15))
_HALVES = ((0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15))


@intrinsic
def transpose8(typingctx, src, src_at, src_stride, dst, dst_at, dst_stride):
    """``dst[dst_at + c·dst_stride + r] = src[src_at + r·src_stride + c]`` for ``r, c < 8``
    (1-D arrays of one element type, indices unchecked): eight vector loads, 24 shuffles, eight
    vector stores."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.dtype == dst.dtype and src.ndim == dst.ndim == 1):  # fmt: skip
        return None  # a typing error at compile time, not a store of the wrong width
    sig = types.void(src, src_at, src_stride, dst, dst_at, dst_stride)

    def codegen(context, builder, signature, args):
        source = context.make_array(signature.args[0])(context, builder, args[0]).data
        target = context.make_array(signature.args[3])(context, builder, args[3]).data
        vector = ir.VectorType(source.type.pointee, 8)
        align = context.get_abi_sizeof(source.type.pointee)  # an element's, not the vector's
        s_at, s_stride, d_at, d_stride = (
            builder.zext(a, _I64) if a.type.width < 64 else a
            for a in (args[1], args[2], args[4], args[5])
        )

        def place(base, start, stride, k):
            offset = builder.add(start, builder.mul(stride, ir.Constant(_I64, k)))
            return builder.bitcast(builder.gep(base, [offset]), vector.as_pointer())

        def shuffle(a, b, mask):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 8),
                                                            list(mask)))  # fmt: skip

        rows = [builder.load(place(source, s_at, s_stride, r), align=align) for r in range(8)]
        mixed = [shuffle(rows[r], rows[r + 1], m) for r in range(0, 8, 2) for m in _INTERLEAVE]
        pairs = [shuffle(mixed[a], mixed[a + 2], m) for a in (0, 1, 4, 5) for m in _PAIRS]
        columns = [shuffle(pairs[k], pairs[k + 4], m) for m in _HALVES for k in range(4)]
        for c, column in enumerate(columns):
            builder.store(column, place(target, d_at, d_stride, c), align=align)
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy", inline="always")
def transpose(src, src_at, src_stride, dst, dst_at, dst_stride, rows, cols):
    """``dst[dst_at + c·dst_stride + r] = src[src_at + r·src_stride + c]`` for ``r < rows``,
    ``c < cols``: 8 x 8 blocks by ``transpose8``, the edges an element at a time."""
    s_at, s_stride, d_at, d_stride = (np.uintp(src_at), np.uintp(src_stride), np.uintp(dst_at),
                                      np.uintp(dst_stride))  # fmt: skip
    n_rows, n_cols = np.uintp(rows), np.uintp(cols)
    r8, c8 = n_rows - n_rows % np.uintp(8), n_cols - n_cols % np.uintp(8)
    for c0 in range(np.uintp(0), c8, np.uintp(8)):
        for r0 in range(np.uintp(0), r8, np.uintp(8)):
            transpose8(src, s_at + r0 * s_stride + c0, s_stride, dst,  # type: ignore[call-arg]
                       d_at + c0 * d_stride + r0, d_stride)  # fmt: skip
    for c in range(np.uintp(0), n_cols):
        for r in range(np.uintp(0) if c >= c8 else r8, n_rows):
            dst[d_at + c * d_stride + r] = src[s_at + r * s_stride + c]
