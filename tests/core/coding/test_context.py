"""Stream version 3 (rANS under per-context tables): exact round trips around the lanes'
segments and the chunks, written only where it pays, and corrupt streams refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from quantcore.coding import context
from quantcore.coding.entropy import decode_codes, decode_plan, encode_codes
from quantcore.errors import InvalidPackageError
from tests.core.coding.test_entropy import laplacian_codes


def correlated_codes(n: int, bits: int, seed: int = 0) -> np.ndarray:
    """Laplacian weights whose scale drifts slowly (as a filter's magnitudes do), quantized
    at ``bits``: the previous codes tell something of the next one's magnitude."""
    rng = np.random.default_rng(seed)
    scale = np.exp(np.cumsum(rng.normal(0, 0.05, n)))
    weights = rng.laplace(size=n) * scale / scale.mean()
    levels = 1 << bits
    codes = np.clip(np.round(weights * levels / 8) + levels // 2, 0, levels - 1)
    return codes.astype(np.uint8 if bits <= 8 else np.uint16)


@pytest.mark.parametrize("count", [1000, 4097, 4103, 8191, 12_297, 40_003])
def test_forced_v3_round_trips_around_the_lanes(count: int, monkeypatch) -> None:
    # Chunks of 4096 codes: the last one of 1 to 4095 codes, fewer than the lanes for some.
    monkeypatch.setattr(context, "CHUNK_SYMBOLS", 4096)
    codes = correlated_codes(count, 4, seed=count)
    codes[:2] = 0, 15  # two distinct high parts at least
    data = encode_codes(codes, version=3)
    assert data[4] == 3
    for threads in (1, 2):
        np.testing.assert_array_equal(decode_codes(data, threads=threads), codes)
    assert encode_codes(codes, version=3, threads=2) == data


@pytest.mark.parametrize("bits", [2, 3, 8, 12])
def test_correlated_codes_get_v3_and_a_smaller_stream(bits: int) -> None:
    codes = correlated_codes(400_000, bits)
    chosen = encode_codes(codes)  # v4 or v14 where they decode fast enough and are smaller
    data = encode_codes(codes, version=3)
    assert data[4] == 3 and chosen[4] in (3, 4, 14) and len(chosen) <= len(data)
    assert len(data) < (1 - context.MIN_GAIN) * len(encode_codes(codes, version=2))
    np.testing.assert_array_equal(decode_codes(data), codes)
    dtype, chunks = decode_plan(data, count=codes.size)
    out = np.empty(codes.size, dtype=dtype)
    for chunk in chunks:
        chunk.fill(out[chunk.start : chunk.start + chunk.size])
    np.testing.assert_array_equal(out, codes)


@pytest.mark.parametrize("bits", [3, 8, 16])
def test_independent_codes_stay_v2(bits: int) -> None:
    codes = laplacian_codes(300_000, bits, seed=bits)
    assert encode_codes(codes)[4] == 2
    # too few codes to pay for the tables: the tableless v4 where it is smaller, never v3
    assert encode_codes(codes[:1000])[4] in (2, 4)


def test_one_distinct_symbol_falls_back_to_v2() -> None:
    codes = np.full(50_000, 7, dtype=np.uint8)
    assert encode_codes(codes, version=3)[4] == 2


def _fields(data: bytes) -> tuple:
    return struct.unpack_from("<4sBBBBQIIIII", data)


def test_corrupt_v3_streams_are_refused_without_crashing() -> None:
    codes = correlated_codes(100_000, 4)
    data = encode_codes(codes, version=3)
    table_len = _fields(data)[8]
    rng = np.random.default_rng(5)
    # Past the CRC: re-seal each corruption so that the structure checks must catch it.
    from quantcore.coding.symbols import CRC_AT, seal

    header = _fields(data)
    body = bytearray(data[36:])
    for position in [*rng.integers(0, table_len, 10), *rng.integers(table_len, len(body), 30)]:
        bad = bytearray(body)
        bad[int(position)] ^= 0x24
        stream = seal(header[:-1], [bytes(bad)])
        assert stream[:CRC_AT] == data[:CRC_AT]
        try:
            back = decode_codes(stream)
        except InvalidPackageError:
            continue
        assert back.size == codes.size  # a flip in the low bits changes codes, not sizes
    with pytest.raises(InvalidPackageError, match="CRC"):
        decode_codes(data[:-1])
    for field, value in ((4, 0), (4, 17), (6, 1)):  # precision, alphabet
        fields = list(header[:-1])
        fields[field] = value
        with pytest.raises(InvalidPackageError):
            decode_codes(seal(tuple(fields), [bytes(body)]))


def test_compiled_kernels_take_every_table_the_decoder_builds() -> None:
    # A 16-bit stream's tables are 16-bit, and past 256 high parts so are its symbol indices:
    # ``compile_kernels`` (run by ``quantserve warm``) must have compiled those signatures.
    context.compile_kernels()
    compiled = set(context.kernels().decode_chunk.signatures)
    wide = correlated_codes(50_000, 12)
    many = np.concatenate([np.zeros(3000, np.uint16), np.arange(512, dtype=np.uint16)])
    for codes in (correlated_codes(50_000, 4), wide, many):
        np.testing.assert_array_equal(decode_codes(encode_codes(codes, version=3)), codes)
    assert set(context.kernels().decode_chunk.signatures) == compiled
