"""``decode`` of per-block codes against the formula spelled out: every weight's block scale
(and zero point) expanded along the block axis, then the same float32 operations."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.quantizers.codes import BlockDecoder, decode


def _expanded(codes: np.ndarray, decoder: BlockDecoder) -> np.ndarray:
    viewed = codes.reshape(decoder.view)
    index, axis = decoder.block_index(), decoder.axis
    if decoder.levels is None:
        values = viewed.astype(np.float32)
        if decoder.zero_point is not None:
            values -= np.take(decoder.zero_point.astype(np.float32), index, axis=axis)
    else:
        values = np.asarray(decoder.levels, np.float32)[viewed]
    values *= np.take(decoder.scale.astype(np.float32), index, axis=axis)
    return values.reshape(codes.shape)


@pytest.mark.parametrize("kind", ["zero_point", "symmetric", "levels"])
@pytest.mark.parametrize(
    ("shape", "view", "axis", "size"),
    [
        ((64, 100), (64, 100), 1, 32),  # ragged last block
        ((100, 64), (100, 64), 0, 32),
        ((8, 40, 5), (8, 40, 5), 1, 16),
        ((6, 3, 3, 3), (6, 27), 1, 16),  # a Conv kernel seen as (O, I·kh·kw)
        ((3, 7, 2), (3, 7, 2), 1, 16),  # one short block only
        ((96,), (96,), 0, 32),
    ],
)
def test_block_decode_is_the_expanded_formula_bit_for_bit(shape, view, axis, size, kind) -> None:
    rng = np.random.default_rng(len(shape) * 31 + axis)
    count = -(-view[axis] // size)
    blocks = (*view[:axis], count, *view[axis + 1 :])
    scale = rng.uniform(1e-3, 1.0, size=blocks).astype(np.float16)
    zero_point, levels = None, None
    if kind == "symmetric":
        codes = rng.integers(-8, 8, size=shape).astype(np.int8)
    else:
        codes = rng.integers(0, 16, size=shape).astype(np.uint8)
    if kind == "zero_point":
        zero_point = rng.integers(0, 16, size=blocks).astype(np.uint8)
    if kind == "levels":
        levels = rng.normal(size=16).astype(np.float32)
    decoder = BlockDecoder(scale=scale, view=view, axis=axis, block_size=size,
                           zero_point=zero_point, levels=levels)  # fmt: skip
    got, want = decode(codes, decoder), _expanded(codes, decoder)
    assert got.dtype == np.float32 and got.shape == shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.unique(got).size > 16  # the block scales took part
