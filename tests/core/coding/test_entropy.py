"""Entropy coding, both stream versions: exact round trips, a rate close to the empirical
entropy, a stream that refuses corruption. Version 2's own cases are in test_rans.py."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.coding import entropy, entropy_v1, rans
from quantcore.coding.entropy import decode_codes, empirical_entropy_bits, encode_codes
from quantcore.errors import InvalidPackageError, InvalidSpecError

HEADER = 36
VERSIONS = pytest.mark.parametrize("version", [1, 2])


def laplacian_codes(n: int, bits: int, *, seed: int = 0) -> np.ndarray:
    """A unit Laplacian quantized uniformly at ``bits`` bits on [-xmax, xmax]."""
    weights = np.random.default_rng(seed).laplace(scale=1 / np.sqrt(2), size=n)
    levels = 1 << bits
    xmax = min(2.0 + 0.75 * bits, 12.0)
    codes = np.clip(np.floor(weights / (2 * xmax / levels)) + levels // 2, 0, levels - 1)
    return codes.astype(np.uint8 if bits <= 8 else np.uint16)


@st.composite
def small_code_arrays(draw: st.DrawFn) -> np.ndarray:
    top = draw(st.sampled_from([1, 2, 3, 16, 255, 256, 4096, 65535]))
    values = draw(st.lists(st.integers(0, top), max_size=300))
    return np.array(values, dtype=np.int64)


@settings(max_examples=300, deadline=None)
@given(small_code_arrays())
def test_round_trip_is_exact(codes: np.ndarray) -> None:
    expected = np.uint8 if codes.size == 0 or codes.max() < 256 else np.uint16
    for version in (1, 2):
        data = encode_codes(codes, version=version)
        assert data[4] == version
        back = decode_codes(data)
        np.testing.assert_array_equal(back, codes)
        assert back.dtype == expected


def test_entropy_golden_values() -> None:
    assert empirical_entropy_bits(np.array([0, 1, 0, 1])) == pytest.approx(1.0)
    assert empirical_entropy_bits(np.arange(8)) == pytest.approx(3.0)
    assert empirical_entropy_bits(np.array([0, 0, 0, 1])) == pytest.approx(0.8112781244591328)
    assert empirical_entropy_bits(np.array([7, 7, 7])) == 0.0
    assert empirical_entropy_bits(np.zeros(0, dtype=np.uint8)) == 0.0


@VERSIONS
def test_empty_input_is_a_header_and_an_empty_table(version: int) -> None:
    data = encode_codes(np.zeros(0, dtype=np.uint16), version=version)
    assert len(data) < HEADER + 16
    back = decode_codes(data)
    assert back.size == 0


@VERSIONS
def test_one_distinct_symbol_stores_no_coded_words(version: int) -> None:
    codes = np.full(1_000_000, 40_000, dtype=np.uint16)
    data = encode_codes(codes, version=version)
    assert len(data) < HEADER + 32
    back = decode_codes(data)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, codes)


@VERSIONS
def test_all_65536_symbols_round_trip(version: int) -> None:
    # Odd symbols are rare and the even ones peaked, so no low bit is worth storing raw:
    # all 65536 symbols are modelled.
    rng = np.random.default_rng(1)
    evens = 2 * np.clip(rng.laplace(16384, 500, 600_000), 0, 32767).astype(np.int64)
    codes = np.concatenate([np.arange(65536), evens]).astype(np.uint16)
    rng.shuffle(codes)
    data = encode_codes(codes, version=version)
    assert data[6] == 0  # raw_bits
    assert struct.unpack_from("<I", data, 16)[0] == 65536  # distinct symbols in the model
    np.testing.assert_array_equal(decode_codes(data), codes)


@VERSIONS
def test_several_chunks_round_trip(version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entropy_v1 if version == 1 else rans, "CHUNK_SYMBOLS", 1000)
    codes = laplacian_codes(10_500, 4)
    data = encode_codes(codes, version=version)
    assert struct.unpack_from("<I", data, 32 - 4)[0] == 11  # number of chunks
    np.testing.assert_array_equal(decode_codes(data), codes)


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_rate_is_within_2_percent_of_the_entropy(bits: int) -> None:
    codes = laplacian_codes(2_000_000, bits, seed=bits)
    ideal_bytes = empirical_entropy_bits(codes) * codes.size / 8
    data = encode_codes(codes)
    assert len(data) <= 1.02 * ideal_bytes + 256
    # The coder is close to ideal, not merely within the bound.
    assert len(data) <= 1.001 * ideal_bytes + 256
    # And version 2 within 0.1% of version 1.
    assert len(data) <= 1.001 * len(encode_codes(codes, version=1))


@pytest.mark.slow
@pytest.mark.parametrize("bits", [3, 16])
def test_rate_on_50_million_laplacian_weights(bits: int) -> None:
    codes = laplacian_codes(50_000_000, bits, seed=7)
    ideal_bytes = empirical_entropy_bits(codes) * codes.size / 8
    data = encode_codes(codes)
    assert len(data) <= 1.02 * ideal_bytes + 256
    np.testing.assert_array_equal(decode_codes(data), codes)
    assert len(data) <= 1.001 * len(encode_codes(codes, version=1))


def test_rate_beats_fixed_width_on_a_skewed_source() -> None:
    codes = laplacian_codes(500_000, 8)
    assert len(encode_codes(codes)) < 0.9 * codes.size


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (np.array([-1, 3]), r"\[-1, 3\]"),
        (np.array([0, 65536]), r"\[0, 65536\]"),
        (np.array([0.5]), "float64"),
    ],
)
def test_codes_outside_the_alphabet_are_refused(codes: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidSpecError, match=match):
        encode_codes(codes)
    if codes.dtype.kind != "f":
        with pytest.raises(InvalidSpecError, match=match):
            empirical_entropy_bits(codes)


@VERSIONS
def test_truncated_stream_is_refused(version: int) -> None:
    data = encode_codes(laplacian_codes(10_000, 4), version=version)
    with pytest.raises(InvalidPackageError, match="header alone needs 36"):
        decode_codes(data[:20])
    with pytest.raises(InvalidPackageError, match="CRC-32"):
        decode_codes(data[:-4])


@VERSIONS
def test_flipped_byte_is_refused(version: int) -> None:
    data = bytearray(encode_codes(laplacian_codes(10_000, 4), version=version))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(InvalidPackageError, match="corrupt"):
        decode_codes(bytes(data))


def test_wrong_magic_and_version_are_refused() -> None:
    data = encode_codes(np.array([1, 2, 3]), version=2)
    with pytest.raises(InvalidPackageError, match="not an entropy stream"):
        decode_codes(b"XXXX" + data[4:])
    with pytest.raises(InvalidPackageError, match="version=16"):
        decode_codes(data[:4] + b"\x10" + data[5:])


def test_corrupt_header_field_is_refused() -> None:
    data = bytearray(encode_codes(laplacian_codes(10_000, 4)))
    data[8] ^= 0x01  # lowest byte of the symbol count
    with pytest.raises(InvalidPackageError, match="CRC-32"):
        decode_codes(bytes(data))


def raw_bits_of(data: bytes) -> int:
    return data[6]


def test_smooth_16_bit_codes_store_their_low_bits_raw() -> None:
    codes = laplacian_codes(1_000_000, 16, seed=3)
    data = encode_codes(codes)
    assert raw_bits_of(data) >= 6
    np.testing.assert_array_equal(decode_codes(data), codes)
    ideal_bytes = empirical_entropy_bits(codes) * codes.size / 8
    tolerance = entropy.RAW_BITS_TOLERANCE + rans.WIDE_GAIN  # v2: its precision
    assert len(data) <= (1 + tolerance) * ideal_bytes + 2048


def test_peaked_3_bit_codes_code_every_bit() -> None:
    assert raw_bits_of(encode_codes(laplacian_codes(100_000, 3))) == 0


def test_uniform_codes_fall_back_to_plain_packing() -> None:
    codes = np.random.default_rng(4).integers(0, 256, 200_000).astype(np.uint8)
    data = encode_codes(codes)
    assert raw_bits_of(data) == 8
    assert codes.size <= len(data) <= codes.size + 128
    np.testing.assert_array_equal(decode_codes(data), codes)


@VERSIONS
def test_raw_bits_across_several_chunks(version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entropy_v1 if version == 1 else rans, "CHUNK_SYMBOLS", 4096)
    codes = laplacian_codes(50_001, 12, seed=5)
    data = encode_codes(codes, version=version)
    assert raw_bits_of(data) > 0
    np.testing.assert_array_equal(decode_codes(data), codes)


@pytest.mark.parametrize("gaps", [0, 3, 8, 9, 40])
def test_ranks_computed_around_gaps_match_the_table(
    gaps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Codes 0..99 with ``gaps`` of them absent: up to _MAX_GAPS the ranks are computed, past
    # it looked up; a table for every input must give the very same stream.
    rng = np.random.default_rng(gaps)
    absent = rng.choice(np.arange(1, 99), size=gaps, replace=False)
    alphabet = np.setdiff1d(np.arange(100), absent)
    peaked = 0.8 ** np.abs(alphabet - 50.0)  # peaked, so no low bits are stored raw
    codes = rng.choice(alphabet, size=100_000, p=peaked / peaked.sum()).astype(np.uint8)
    codes[: alphabet.size] = alphabet
    data = encode_codes(codes, version=1)
    np.testing.assert_array_equal(decode_codes(data), codes)
    monkeypatch.setattr(entropy_v1, "MAX_GAPS", -1)
    assert encode_codes(codes, version=1) == data


@VERSIONS
def test_counts_given_by_the_caller_give_the_same_stream(version: int) -> None:
    codes = laplacian_codes(200_000, 8, seed=4)
    counts = np.bincount(codes, minlength=256)
    data = encode_codes(codes, version=version)
    assert encode_codes(codes, counts=counts, version=version) == data
    assert encode_codes(codes, counts=counts[: int(codes.max()) + 1], version=version) == data


@pytest.mark.parametrize(
    "counts",
    [np.array([3, 2]), np.array([[4]]), np.array([4.0]), np.array([5, -1]), np.ones(65537, int)],
)
def test_counts_that_cannot_be_a_bincount_are_refused(counts: np.ndarray) -> None:
    with pytest.raises(InvalidSpecError, match="not a bincount of 4 codes"):
        encode_codes(np.zeros(4, dtype=np.uint8), counts=counts)
