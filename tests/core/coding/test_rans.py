"""Stream version 2 (interleaved rANS, numba): round trips on the edge cases, the same bytes
on any number of threads, both decoders, exact reciprocals, and corrupt streams refused
without crashing."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from quantcore.coding import rans
from quantcore.coding.entropy import decode_codes, empirical_entropy_bits, encode_codes
from quantcore.coding.symbols import CRC_AT, HEADER
from quantcore.errors import InvalidPackageError, InvalidSpecError
from tests.core.coding.test_entropy import laplacian_codes


def _round_trip(codes: np.ndarray) -> bytes:
    """The stream of ``codes``, checked to decode exactly and to be the same bytes on one
    thread and on two."""
    data = encode_codes(codes, threads=1, version=2)
    assert data[4] == 2
    assert encode_codes(codes, threads=2, version=2) == data
    for threads in (1, 2):
        back = decode_codes(data, threads=threads)
        np.testing.assert_array_equal(back, np.asarray(codes).ravel())
    return data


RNG = np.random.default_rng(11)
EDGE_CASES = {
    "empty": np.zeros(0, dtype=np.uint8),
    "one symbol": np.array([9], dtype=np.uint16),
    "constant": np.full(100_003, 300, dtype=np.uint16),
    "two symbols": np.array([0, 1] * 50_001, dtype=np.uint8),
    "uniform 8-bit": RNG.integers(0, 256, 100_000).astype(np.uint8),
    "uniform 16-bit": RNG.integers(0, 65536, 100_000).astype(np.uint16),
    "4-bit laplacian": laplacian_codes(300_001, 4, seed=1),
    "8-bit laplacian": laplacian_codes(300_002, 8, seed=2),
    "16-bit laplacian": laplacian_codes(300_003, 16, seed=3),
    "one rare symbol": np.concatenate([np.zeros(200_000), [255]]).astype(np.uint8),
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_cases_round_trip(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", 65_536)  # several chunks for the larger ones
    _round_trip(EDGE_CASES[name])


@pytest.mark.parametrize(
    "count", [1, 7, 8, 9, 15, 16, 17, 999, 1000, 1001, 1007, 1008, 2000, 2001, 3999]
)
def test_lengths_around_lanes_and_chunks(count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", 1000)
    data = _round_trip(laplacian_codes(count, 12, seed=count))
    chunks = -(-count // 1000) if count > 1 else 0  # one code is one symbol: nothing to code
    assert struct.unpack_from("<I", data, 28)[0] == chunks


def test_a_wide_alphabet_uses_more_than_16_bits_of_precision() -> None:
    rng = np.random.default_rng(1)
    evens = 2 * np.clip(rng.laplace(16384, 500, 600_000), 0, 32767).astype(np.int64)
    codes = np.concatenate([np.arange(65536), evens]).astype(np.uint16)
    rng.shuffle(codes)
    data = _round_trip(codes)
    assert data[6] == 0 and data[7] > rans.FAST_PRECISION  # raw_bits, precision


@pytest.mark.parametrize("bits", [3, 8, 16])
def test_the_wide_decoder_on_any_precision(bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rans, "FAST_PRECISION", 0)  # every stream through decode_chunk_wide
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", 10_000)
    _round_trip(laplacian_codes(25_005, bits, seed=bits))


def test_the_precision_is_small_where_it_costs_nothing() -> None:
    codes = laplacian_codes(1_000_000, 3)
    data = encode_codes(codes)
    assert data[7] <= 12  # tables in the first-level cache
    ideal = empirical_entropy_bits(codes) * codes.size / 8
    assert len(data) <= ideal * (1 + 2 * rans.PRECISION_TOLERANCE) + 256


def test_frequencies_sum_to_the_precision_and_stay_positive() -> None:
    counts = np.array([10**9, 1, 1, 1, 5, 70_000], dtype=np.int64)
    for precision in range(3, 25):
        freqs = rans._freqs(counts, precision)
        assert freqs.sum() == 1 << precision and freqs.min() >= 1


def test_the_encoder_reciprocals_divide_exactly() -> None:
    rng = np.random.default_rng(5)
    for precision in (8, 12, 16, 24):
        freqs = np.unique(
            np.concatenate([[1, 2, 3, (1 << precision) - 1], rng.integers(1, 1 << precision, 50)])
        )
        symbols = np.arange(freqs.size)
        rows = rans._encoder_rows(symbols, freqs, precision, int(freqs.size).bit_length())
        for freq, row in zip(freqs.tolist(), rows.tolist(), strict=False):
            x_max, rcp, bias, cmpl = row
            assert x_max == freq << (63 - precision)
            lows = [1 << 31, (1 << 31) + 1, x_max - 1]
            for x in [*lows, *map(int, rng.integers(1 << 31, x_max, 200, dtype=np.uint64))]:
                q = (x * rcp >> 64) >> (cmpl >> 32)
                state = x + bias + q * (cmpl & 0xFFFFFFFF)
                cum = bias - ((1 << precision) - 1 if freq == 1 else 0)
                assert state == (x // freq << precision) + x % freq + cum


def test_counts_that_miss_a_code_are_refused() -> None:
    # One high part and a raw low bit: 2 >> 1 is not counted.
    with pytest.raises(InvalidSpecError, match="not the codes' bincount"):
        encode_codes(np.array([0, 0, 1, 2], dtype=np.uint8), counts=np.array([2, 2]))
    # Peaked, so every bit is ANS-coded: 9 is not counted (8 is, instead).
    codes = np.repeat(np.array([0, 1, 2, 3, 9], dtype=np.uint8), [1000, 100, 10, 1, 1])
    counts = np.bincount(codes, minlength=10)
    counts[[8, 9]] = [1, 0]
    with pytest.raises(InvalidSpecError, match="not the codes' bincount"):
        encode_codes(codes, counts=counts)
    # Counts of codes wider than the codes given.
    counts = np.bincount(codes, minlength=400)
    counts[[9, 300]] = [0, 1]
    with pytest.raises(InvalidSpecError, match="not the codes' bincount"):
        encode_codes(codes, counts=counts)


def _reseal(data: bytearray) -> bytes:
    """``data`` with its CRC-32 made right again, so that the decoder's own checks run."""
    crc = zlib.crc32(data[HEADER.size :], zlib.crc32(data[:CRC_AT]))
    data[CRC_AT : HEADER.size] = struct.pack("<I", crc)
    return bytes(data)


def _decodes_or_refuses(data: bytes, count: int) -> None:
    try:
        back = decode_codes(data)
    except InvalidPackageError:
        return
    assert back.size == count  # an undetectable change (e.g. in the raw low bits)


def test_corrupt_streams_past_the_crc_are_refused_or_decode_in_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", 3000)
    rng = np.random.default_rng(7)
    for bits in (4, 16):
        codes = laplacian_codes(10_001, bits, seed=bits)
        data = encode_codes(codes)
        for _ in range(150):
            broken = bytearray(data)
            for at in rng.integers(4, len(data), rng.integers(1, 4)):
                broken[at] ^= 1 << int(rng.integers(8))
            _decodes_or_refuses(_reseal(broken), codes.size)
        for cut in (HEADER.size + 1, len(data) // 2, len(data) - 1):
            with pytest.raises(InvalidPackageError):
                decode_codes(_reseal(bytearray(data[:cut])))


@pytest.mark.parametrize(
    ("index", "value"),  # of the field in the header
    [
        (2, 12),  # width
        (3, 9),  # raw_bits
        (4, 3),  # precision
        (4, 30),
        (5, 10_002),  # count
        (6, 3),  # distinct high parts
        (7, 999),  # chunk size
        (7, 0),
        (8, 5),  # table length
        (9, 2),  # chunks
    ],
)
def test_header_fields_that_disagree_are_refused(index: int, value: int) -> None:
    data = encode_codes(laplacian_codes(10_001, 12, seed=3))
    fields = list(HEADER.unpack_from(data))
    fields[index] = value
    broken = bytearray(HEADER.pack(*fields) + data[HEADER.size :])
    with pytest.raises(InvalidPackageError):
        decode_codes(_reseal(broken))


def test_a_state_below_the_bound_is_refused() -> None:
    data = bytearray(encode_codes(laplacian_codes(10_000, 4), version=2))
    table_len, n_chunks = struct.unpack_from("<II", data, 24)
    first_word = HEADER.size + table_len + 4 * n_chunks
    data[first_word : first_word + 8] = struct.pack("<Q", 5)
    with pytest.raises(InvalidPackageError, match="bad states"):
        decode_codes(_reseal(data))


def test_importing_the_coder_loads_neither_numba_nor_constriction() -> None:
    code = (
        "import sys, quantcore.coding.entropy, quantcore.formats.qpack\n"
        "assert 'numba' not in sys.modules and 'constriction' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_codes_on_threads_of_its_own() -> None:
    codes = laplacian_codes(50_000, 4)
    data = encode_codes(codes, threads=2)  # the parent's pool of two threads exists now
    rans.CHUNK_SYMBOLS, chunk = 10_000, rans.CHUNK_SYMBOLS
    try:
        several = encode_codes(codes, threads=2)
    finally:
        rans.CHUNK_SYMBOLS = chunk
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if both decode on its own threads
        ok = np.array_equal(decode_codes(several, threads=2), codes)
        os._exit(0 if ok and np.array_equal(decode_codes(data, threads=2), codes) else 1)
    for _ in range(600):  # a child stuck on a pool without threads is killed after 60 s
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child never finished decoding")
    assert os.waitstatus_to_exitcode(status) == 0


def test_any_buffer_decodes_with_the_same_kernels() -> None:
    codes = laplacian_codes(20_001, 10, seed=9)
    data = encode_codes(codes)
    rans.compile_kernels()
    before = {k: len(getattr(rans.kernels(), k).signatures) for k in ("decode_chunk", "or_low")}
    for buffer in (data, bytearray(data), memoryview(b"x" + data)[1:]):  # the last unaligned
        np.testing.assert_array_equal(decode_codes(buffer), codes)
    after = {k: len(getattr(rans.kernels(), k).signatures) for k in before}
    assert after == before  # aligned or not, writable or not: nothing compiled again
