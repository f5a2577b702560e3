"""``across_kernels``' write-out of gathered errors: 8 x 8 transposes in vector registers and
element-wise edges, against NumPy's transpose, for both float types and ragged shapes."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.jit import njit
from quantcore.quantizers.across_kernels import _write_errors
from quantcore.quantizers.transpose_kernel import transpose8


@njit(cache=False)
def _transpose(src, src_at, src_stride, dst, dst_at, dst_stride):  # type: ignore[no-untyped-def]
    transpose8(src, src_at, src_stride, dst, dst_at, dst_stride)


@njit(cache=False)
def _write(tile, flat_err, width, held, err_stride, gathered):  # type: ignore[no-untyped-def]
    _write_errors(tile, flat_err, np.uintp(width), held, np.uintp(err_stride), gathered)


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


def test_arrays_of_two_element_types_do_not_compile() -> None:
    """The block is stored as a vector of the source's type: a destination of another type
    is refused when the kernel is typed, not written at the wrong width."""
    from numba.core.errors import TypingError

    with pytest.raises(TypingError):
        _transpose(np.zeros(64, np.float32), 0, 8, np.zeros(64, np.float64), 0, 8)
