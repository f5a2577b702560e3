"""The vector decoder of the trellis streams (``trellis_batch``, ``trellis_simd``): the codes
of the scalar kernel whatever the chunks grouped together, the same answer on corrupt words,
and 4-bit codes packed two a byte. The loop's tests run with each of its forms this CPU can
run (AVX-512's and AVX2's; an AVX-512 CPU runs both)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from quantcore.coding import (
    rans_batch,
    rans_chunks,
    rans_simd,
    trellis_batch,
    trellis_coder,
)
from quantcore.coding.entropy import decode_codes, decode_plan
from quantcore.compress.trellis import trellis_levels
from quantcore.errors import InvalidPackageError


@pytest.fixture(params=["avx512", "avx2"])
def vector(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trellis_batch`` decoding with one form of the vector loop (skipped where the CPU
    cannot run it)."""
    wide = request.param == "avx512"
    if not (rans_simd.available() if wide else rans_simd.usable()):
        pytest.skip(f"this CPU lacks {request.param}")
    monkeypatch.setattr(trellis_batch, "_usable", True)
    monkeypatch.setattr(trellis_batch, "_refill", None if wide else rans_simd.REFILL_ROWS)


def _levels(n: int, seed: int, step: float, machine: int, runs: bool = False,
            signs: bool = False) -> np.ndarray:  # fmt: skip
    rng = np.random.default_rng(seed)
    w = rng.laplace(size=n)
    if runs:  # magnitudes in runs: the classes pay (K = 8)
        w *= np.repeat(rng.choice([0.05, 3.0], size=n // 500 + 1), 500)[:n]
    if signs:  # signs in runs, as neighbouring weights': the mirrored version pays
        w = np.abs(w) * np.repeat(rng.choice([-1.0, 1.0], size=n // 9 + 1), 9)[:n]
    return trellis_levels(w.astype(np.float32), step, 2000, machine).levels


def _streams(monkeypatch: pytest.MonkeyPatch, chunk: int) -> list[tuple[bytes, np.ndarray]]:
    """Streams of every machine, plain and mirrored, one and eight magnitude classes, 8- and
    16-bit codes, precisions from a few bits to 16, chunks from a few codes to many rounds."""
    monkeypatch.setattr(trellis_coder, "CHUNK_SYMBOLS", chunk)
    cases = [
        (50_001, 1, 0.2, 12, False, np.uint8),
        (40_000, 2, 0.3, 12, True, np.uint8),
        (30_007, 3, 0.5, 7, False, np.uint8),
        (40_000, 4, 0.2, 5, False, np.uint8),
        (25_003, 5, 0.004, 12, True, np.uint16),
        (13, 6, 0.2, 12, False, np.uint8),  # fewer codes than two rounds
        (9_000, 7, 1.5, 7, False, np.uint8),  # few symbols: low precision
    ]
    streams = []
    for n, seed, step, machine, runs, dtype in cases:
        for signs in (False, True):
            levels = _levels(n, seed, step, machine, runs, signs)
            code_min = int(levels.min())
            codes = (levels - code_min).astype(dtype)
            assert int(levels.max()) - code_min < 1 << (8 * np.dtype(dtype).itemsize)
            stream = trellis_coder.encode(codes, code_min, 1)
            assert stream is not None
            streams.append((stream, codes))
    assert {s[4] for s, _ in streams} >= {5, 6, 10, 11, 12, 13}
    return streams


def _scalar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trellis_batch, "vector_kernels", lambda: None)


@pytest.mark.usefixtures("vector")
@pytest.mark.parametrize("chunk", [1000, 4099, 1 << 21])
def test_grouped_chunks_decode_as_the_scalar_kernel(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, expected = [], []
    for data, codes in _streams(monkeypatch, chunk):
        dtype, chunks = decode_plan(data)
        whole = np.zeros(codes.size, dtype=dtype)
        jobs += [(c, whole[c.start : c.start + c.size]) for c in chunks]
        assert all(c.trellis is not None for c in chunks)
        expected.append((whole, codes))
    rans_batch.fill_chunks(jobs)  # every stream's chunks in one run: groups mix tables
    for whole, codes in expected:
        np.testing.assert_array_equal(whole, codes)


def test_each_chunk_alone_decodes_its_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through its own ``fill``, with the vector loop and without it."""
    for vector in (True, False):
        if not vector:
            _scalar(monkeypatch)
        for data, codes in _streams(monkeypatch, 4099):
            dtype, chunks = decode_plan(data)
            for c in chunks:
                out = np.zeros(c.size, dtype=dtype)
                c.fill(out)
                np.testing.assert_array_equal(out, codes[c.start : c.start + c.size])


def _corrupt(coded: rans_chunks.TrellisCoded, rng: np.random.Generator) -> rans_chunks.TrellisCoded:
    words = coded.words.copy()
    for at in rng.integers(0, words.size, rng.integers(1, 4)):
        words[at] ^= np.uint32(1 << int(rng.integers(32)))
    if rng.random() < 0.3:  # truncated: the loop must stop before the end
        words = words[: max(16, words.size - int(rng.integers(1, 40)))]
    words.flags.writeable = False
    return dataclasses.replace(coded, words=words)


def _decode_guarded(jobs: list[tuple[rans_chunks.TrellisCoded, int, np.dtype]]) -> list[object]:
    """Each chunk decoded alone into the middle of a guarded array: its codes, or the error."""
    results: list[object] = []
    for coded, size, dtype in jobs:
        guard = np.full(size + 64, 0xAB, dtype=dtype)
        try:
            trellis_batch.decode([(coded, guard[32 : 32 + size])])
            results.append(guard[32 : 32 + size].copy())
        except InvalidPackageError as error:
            results.append(str(error))
        assert (guard[:32] == 0xAB).all() and (guard[-32:] == 0xAB).all()
    return results


@pytest.mark.usefixtures("vector")
def test_corrupt_words_give_the_scalar_kernels_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Words changed after the CRC: the vector loop reads the words the scalar step reads, in
    its order, so it refuses the same chunks and decodes the others to the same codes, never
    reading or writing outside."""
    rng = np.random.default_rng(9)
    jobs = []
    for data, _ in _streams(monkeypatch, 3000)[:6]:
        dtype, chunks = decode_plan(data)
        for c in chunks:
            assert c.trellis is not None
            jobs += [(_corrupt(c.trellis, rng), c.size, dtype) for _ in range(4)]
    vector = _decode_guarded(jobs)
    _scalar(monkeypatch)
    scalar = _decode_guarded(jobs)
    refused = 0
    for a, b in zip(vector, scalar, strict=True):
        if isinstance(a, str):
            assert a == b
            refused += 1
        else:
            np.testing.assert_array_equal(a, b)
    assert refused > len(jobs) // 2


def _decode_pair_guarded(pair: list[tuple[rans_chunks.TrellisCoded, int]], dtype: np.dtype,
                         ) -> object:  # fmt: skip
    """Two chunks of a stream decoded as a pair into guarded arrays: their codes, or the
    error."""
    guards = [np.full(size + 64, 0xAB, dtype=dtype) for _, size in pair]
    try:
        trellis_batch.decode([(coded, g[32 : 32 + size]) for (coded, size), g in
                              zip(pair, guards, strict=True)])  # fmt: skip
        result: object = [g[32:-32].copy() for g in guards]
    except InvalidPackageError as error:
        result = str(error)
    assert all((g[:32] == 0xAB).all() and (g[-32:] == 0xAB).all() for g in guards)
    return result


@pytest.mark.usefixtures("vector")
def test_a_streams_two_chunks_decode_together_as_each_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two chunks of one stream (``trellis_simd.decode_pair``), of unequal sizes, whole or
    with words changed after the CRC: the codes of each chunk alone by the scalar kernel,
    or the error of the first of the two that it refuses."""
    rng = np.random.default_rng(10)
    cases = []
    for data, _ in _streams(monkeypatch, 3000):
        dtype, chunks = decode_plan(data)
        for a, b in itertools.pairwise(chunks):
            assert a.trellis is not None and b.trellis is not None
            pair = [(a.trellis, a.size), (b.trellis, b.size)]
            cases.append((pair, dtype))
            for _ in range(2):
                cases.append(([(_corrupt(c, rng) if rng.random() < 0.6 else c, n)
                               for c, n in pair], dtype))  # fmt: skip
    assert any(a[1] != b[1] for pair, _ in cases for a, b in [pair])  # a shorter last chunk
    together = [_decode_pair_guarded(pair, dtype) for pair, dtype in cases]
    _scalar(monkeypatch)
    refused = 0
    for (pair, dtype), got in zip(cases, together, strict=True):
        alone = _decode_guarded([(coded, size, dtype) for coded, size in pair])
        failed = [r for r in alone if isinstance(r, str)]
        if failed:
            assert got == failed[0]
            refused += 1
        else:
            assert isinstance(got, list)
            for x, y in zip(got, alone, strict=True):
                np.testing.assert_array_equal(x, y)
    assert 0 < refused < len(cases)


@pytest.mark.parametrize("vector", [True, False])
def test_four_bit_trellis_codes_are_packed_two_a_byte(
    vector: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not vector:
        _scalar(monkeypatch)
    monkeypatch.setattr(trellis_coder, "CHUNK_SYMBOLS", 1000)
    levels = _levels(9_001, 8, 2.0, 12)
    code_min = int(levels.min())
    codes = (levels - code_min).astype(np.uint8)
    assert codes.max() < 16
    stream = trellis_coder.encode(codes, code_min, 1)
    assert stream is not None
    _, chunks = decode_plan(stream)
    packed = np.zeros((codes.size + 1) // 2, dtype=np.uint8)
    rans_batch.fill_nibbles([(c, packed[c.start // 2 : (c.start + c.size + 1) // 2], 3)
                             for c in chunks])  # fmt: skip
    nibbles = np.empty(packed.size * 2, dtype=np.uint8)
    nibbles[0::2], nibbles[1::2] = packed & 0xF, packed >> 4
    np.testing.assert_array_equal(nibbles[: codes.size], (codes + 3) & 0xF)


@pytest.mark.parametrize(("count", "low_rate"), [
    (24_576, True), (36_864, True), (1 << 17, False), (147_456, False),
    (3 * (1 << 17) + 5, False), ((1 << 22) - 8, False), (5 << 20, False),
])  # fmt: skip
def test_large_streams_have_chunks_to_pair_whose_lanes_do_not_alias(
    count: int, low_rate: bool
) -> None:
    chunk = trellis_coder.chunk_size(count, low_rate)
    assert chunk % 8 == 0 and chunk <= trellis_coder.CHUNK_SYMBOLS
    assert (chunk // 8 // 64) % 2 == 1  # lane segments not a multiple of 4096 codes apart
    assert -(-count // chunk) >= 2
    assert trellis_coder.chunk_size(trellis_coder.PAIRED_CODES - 1) == trellis_coder.CHUNK_SYMBOLS
    low = trellis_coder.LOW_RATE_PAIRED_CODES
    assert trellis_coder.chunk_size(low - 1, True) == trellis_coder.CHUNK_SYMBOLS


def _decodes_whole_and_by_chunk(stream: bytes, codes: np.ndarray) -> None:
    """``stream`` decodes to ``codes`` on one thread (its chunks together), on two, and each
    chunk alone through its ``fill``."""
    for threads in (1, 2):
        np.testing.assert_array_equal(decode_codes(stream, threads=threads), codes)
    dtype, chunks = decode_plan(stream)
    for c in chunks:
        out = np.zeros(c.size, dtype=dtype)
        c.fill(out)
        np.testing.assert_array_equal(out, codes[c.start : c.start + c.size])


@pytest.mark.parametrize("signs", [False, True])
def test_low_rate_streams_are_paired_from_fewer_codes(signs: bool) -> None:
    """Under ``PAIRED_CODES`` codes, a stream of at most ``PAIRED_BITS`` bits a code (and at
    least ``PAIRED_MIN_BYTES``) is written in two chunks (decoded as a pair: the same codes on
    every path), one of more bits, or fewer bytes, in one."""
    n = trellis_coder.LOW_RATE_PAIRED_CODES + 12_288
    for step, paired in ((1.5, True), (0.1, False), (2.0, False)):
        levels = _levels(n, 22, step, 12, signs=signs)
        code_min = int(levels.min())
        codes = (levels - code_min).astype(np.uint8)
        stream = trellis_coder.encode(codes, code_min, 1)
        assert stream is not None
        large_enough = len(stream) >= trellis_coder.PAIRED_MIN_BYTES
        low_rate = 8 * len(stream) <= trellis_coder.PAIRED_BITS * n
        assert (large_enough and low_rate) == paired
        _, chunks = decode_plan(stream)
        assert len(chunks) == (2 if paired else 1)
        _decodes_whole_and_by_chunk(stream, codes)


@pytest.mark.parametrize("signs", [False, True])
def test_a_large_stream_decodes_its_two_chunks_together(
    signs: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tensor of ``PAIRED_CODES`` codes or more: two chunks (the mirrored version's mirror
    and model follow them), the same codes whether the pair is decoded together, chunk by
    chunk, on two threads or by the scalar kernel."""
    levels = _levels(trellis_coder.PAIRED_CODES + 4099, 21, 0.2, 12, signs=signs)
    code_min = int(levels.min())
    codes = (levels - code_min).astype(np.uint8)
    stream = trellis_coder.encode(codes, code_min, 2)
    assert stream is not None and stream[4] == (13 if signs else 12)
    _, chunks = decode_plan(stream)
    assert len(chunks) == 2 and chunks[0].size == trellis_coder.chunk_size(codes.size)
    _decodes_whole_and_by_chunk(stream, codes)
    _scalar(monkeypatch)
    np.testing.assert_array_equal(decode_codes(stream, threads=1), codes)
