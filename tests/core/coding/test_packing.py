"""Bit packing: exact round trips, the documented little-endian bit layout, errors that name
the values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.coding.packing import pack_bits, packed_size, unpack_bits
from quantcore.errors import InvalidPackageError, InvalidSpecError


@st.composite
def codes_and_bits(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    bits = draw(st.integers(1, 16))
    values = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=200))
    return np.array(values, dtype=np.int64), bits


@settings(max_examples=300, deadline=None)
@given(codes_and_bits())
def test_round_trip_is_exact_for_every_width(case: tuple[np.ndarray, int]) -> None:
    codes, bits = case
    data = pack_bits(codes, bits)
    assert len(data) == (codes.size * bits + 7) // 8
    back = unpack_bits(data, bits, codes.size)
    assert back.dtype == (np.uint8 if bits <= 8 else np.uint16)
    np.testing.assert_array_equal(back, codes)


@pytest.mark.parametrize(
    ("codes", "bits", "expected"),
    [
        ([1, 0, 1, 1, 0, 0, 0, 1, 1], 1, bytes([0b10001101, 0b1])),
        ([1, 2, 3], 2, bytes([1 | 2 << 2 | 3 << 4])),
        ([5, 3], 3, bytes([5 | 3 << 3])),
        ([0xA, 0x5, 0xF], 4, bytes([0x5A, 0x0F])),
        ([0xABC, 0x123], 12, bytes([0xBC, 0x3A, 0x12])),
        ([0x1FF, 0x001], 9, bytes([0xFF, 0x03, 0x00])),
        ([0x1234, 0xFFFF], 16, bytes([0x34, 0x12, 0xFF, 0xFF])),
    ],
)
def test_layout_is_a_little_endian_bit_stream(codes: list[int], bits: int, expected: bytes) -> None:
    assert pack_bits(np.array(codes), bits) == expected


def test_straddling_codes_across_64_bit_words_at_every_width() -> None:
    # Slots whose bits straddle bit 64 of a group; compare with the stream built bit by bit.
    rng = np.random.default_rng(3)
    for bits in range(1, 17):
        codes = rng.integers(0, 1 << bits, size=37)
        stream = "".join(format(int(c), f"0{bits}b")[::-1] for c in codes)
        stream += "0" * (-len(stream) % 8)
        expected = bytes(int(stream[i : i + 8][::-1], 2) for i in range(0, len(stream), 8))
        assert pack_bits(codes, bits) == expected, bits


@pytest.mark.parametrize("bits", [3, 11])
def test_many_slices_round_trip(bits: int) -> None:
    codes = np.random.default_rng(bits).integers(0, 1 << bits, size=(1 << 22) + 13)
    back = unpack_bits(pack_bits(codes, bits), bits, codes.size)
    np.testing.assert_array_equal(back, codes)


def test_multidimensional_codes_pack_in_c_order() -> None:
    codes = np.arange(12, dtype=np.uint8).reshape(3, 4)
    back = unpack_bits(pack_bits(codes, 4), 4, 12)
    np.testing.assert_array_equal(back.reshape(3, 4), codes)


def test_empty_codes_pack_to_no_bytes() -> None:
    assert pack_bits(np.zeros(0, dtype=np.uint8), 5) == b""
    assert unpack_bits(b"", 5, 0).size == 0


@pytest.mark.parametrize("bits", [0, 17, -1])
def test_width_outside_1_to_16_is_refused(bits: int) -> None:
    with pytest.raises(InvalidSpecError, match=f"bits={bits}"):
        pack_bits(np.array([0]), bits)
    with pytest.raises(InvalidSpecError, match=f"bits={bits}"):
        unpack_bits(b"", bits, 0)


def test_code_out_of_range_names_the_range() -> None:
    with pytest.raises(InvalidSpecError, match=r"\[0, 8\].*\[0, 7\].*bits=3"):
        pack_bits(np.array([0, 8]), 3)
    with pytest.raises(InvalidSpecError, match=r"\[-1, 2\]"):
        pack_bits(np.array([-1, 2]), 3)


def test_float_codes_are_refused() -> None:
    with pytest.raises(InvalidSpecError, match="float32"):
        pack_bits(np.array([1.0], dtype=np.float32), 4)


def test_short_or_long_data_is_a_package_error() -> None:
    data = pack_bits(np.arange(10), 5)
    assert packed_size(10, 5) == 7
    with pytest.raises(InvalidPackageError, match="holds 6 bytes, expected 7"):
        unpack_bits(data[:-1], 5, 10)
    with pytest.raises(InvalidPackageError, match="holds 8 bytes, expected 7"):
        unpack_bits(data + b"\0", 5, 10)
