"""``transpose_kernel``: 8 x 8 transposes in vector registers and the blocked copy built on them
(the across-rows kernel's write-out of gathered errors, the group lanes' runs), against
NumPy's transpose, for float and integer element types and ragged shapes."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.jit import njit
from quantcore.quantizers.transpose_kernel import transpose, transpose8


@njit(cache=False)
def _transpose(src, src_at, src_stride, dst, dst_at, dst_stride):  # type: ignore[no-untyped-def]
    transpose8(src, src_at, src_stride, dst, dst_at, dst_stride)


@njit(cache=False)
def _write(tile, flat_err, width, held, err_stride, gathered):  # type: ignore[no-untyped-def]
    # As ``across_kernels.stream_across`` writes its gathered errors out.
    transpose(tile, 0, width, flat_err, gathered, err_stride, held, width)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_block_lands_transposed_and_nothing_else_is_touched(dtype: type) -> None:
    src = np.random.default_rng(1).normal(size=300).astype(dtype)
    dst = np.full(400, -1.0, dtype)
    _transpose(src, 5, 33, dst, 7, 41)  # unaligned starts and strides
    want = np.full(400, -1.0, dtype)
    for r in range(8):
        for c in range(8):
            want[7 + c * 41 + r] = src[5 + r * 33 + c]
    assert np.array_equal(dst, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("width", "held"), [(512, 128), (168, 128), (29, 37), (8, 5), (3, 16)])
def test_gathered_rows_go_out_channel_by_channel(dtype: type, width: int, held: int) -> None:
    rng = np.random.default_rng(width * held)
    tile = rng.normal(size=held * width + 11).astype(dtype)  # rows of ``width`` channels
    stride, gathered = held + 50, 19  # each channel's row; the rows written before these
    err = np.full(width * stride, np.nan, dtype)
    _write(tile, err, width, held, stride, gathered)
    rows = err.reshape(width, stride)
    assert np.array_equal(rows[:, gathered : gathered + held],
                          tile[: held * width].reshape(held, width).T)  # fmt: skip
    assert np.isnan(rows[:, :gathered]).all() and np.isnan(rows[:, gathered + held :]).all()


@njit(cache=False)
def _block(src, src_at, src_stride, dst, dst_at, dst_stride, rows, cols):  # type: ignore[no-untyped-def]
    transpose(src, src_at, src_stride, dst, dst_at, dst_stride, rows, cols)


@pytest.mark.parametrize(("rows", "cols"), [(64, 32), (32, 64), (13, 20)])
def test_integer_codes_land_transposed_and_nothing_else_is_touched(rows: int, cols: int) -> None:
    """As the group lanes move a run of 4-bit codes out of their tile: ``int8`` elements."""
    src = np.random.default_rng(rows * cols).integers(-8, 8, rows * cols + 5).astype(np.int8)
    stride = rows + 3
    dst = np.full(cols * stride + 7, 99, np.int8)
    _block(src, 5, cols, dst, 7, stride, rows, cols)
    want = np.full(cols * stride + 7, 99, np.int8)
    for r in range(rows):
        for c in range(cols):
            want[7 + c * stride + r] = src[5 + r * cols + c]
    assert np.array_equal(dst, want)


def test_arrays_of_two_element_types_do_not_compile() -> None:
    """The block is stored as a vector of the source's type: a destination of another type
    is refused when the kernel is typed, not written at the wrong width."""
    from numba.core.errors import TypingError

    with pytest.raises(TypingError):
        _transpose(np.zeros(64, np.float32), 0, 8, np.zeros(64, np.float64), 0, 8)
