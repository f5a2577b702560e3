"""The vector decoder of stream v2 (``rans_batch``, ``rans_simd``): the codes of the scalar
kernel whatever the chunks grouped together, and corrupt chunks refused without reading
out of bounds."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.coding import rans, rans_batch, rans_chunks
from quantcore.coding.entropy import decode_plan, encode_codes
from quantcore.errors import InvalidPackageError
from tests.core.coding.test_entropy import laplacian_codes

needs_vector = pytest.mark.skipif(
    rans_batch.vector_kernels() is None, reason="no AVX-512: the scalar kernels decode"
)


def _streams(monkeypatch: pytest.MonkeyPatch, chunk: int) -> list[tuple[bytes, np.ndarray]]:
    """Streams of every shape the vector loop meets: 0 to 9 raw low bits, precisions from 1
    to 16, 8- and 16-bit codes, chunks of a few codes to many rounds."""
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", chunk)
    rng = np.random.default_rng(5)
    cases = [
        laplacian_codes(50_001, 3, seed=1),
        laplacian_codes(40_000, 8, seed=2),  # raw low bits
        laplacian_codes(30_007, 12, seed=3),  # 16-bit codes, raw low bits
        laplacian_codes(60_001, 16, seed=7),  # more than 8 raw low bits: ORed in after
        np.array([0, 1] * 9_000 + [1], dtype=np.uint8),  # precision 1
        rng.integers(0, 256, 20_000).astype(np.uint8),  # all raw: not vector-decoded
        np.concatenate([np.zeros(30_000), rng.integers(0, 200, 999)]).astype(np.uint8),
        rng.integers(0, 7, 13).astype(np.uint8),  # fewer codes than a round or 8 low bytes
    ]
    return [(encode_codes(c, version=2), c) for c in cases]


@needs_vector
@pytest.mark.parametrize("chunk", [1000, 4096, 65_536])
def test_grouped_chunks_decode_as_the_scalar_kernel(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, expected, vector = [], [], 0
    for data, codes in _streams(monkeypatch, chunk):
        dtype, chunks = decode_plan(data)
        whole = np.zeros(codes.size, dtype=dtype)
        for c in chunks:
            reference = np.zeros(c.size, dtype=dtype)
            c.fill(reference)  # the scalar kernel
            np.testing.assert_array_equal(reference, codes[c.start : c.start + c.size])
            jobs.append((c, whole[c.start : c.start + c.size]))
            vector += c.coded is not None
        expected.append((whole, codes))
    rans_batch.fill_chunks(jobs)  # every stream's chunks in one run: groups mix tables
    for whole, codes in expected:
        np.testing.assert_array_equal(whole, codes)
    assert vector >= len(jobs) // 2  # most chunks went through the vector loop


@needs_vector
def test_the_groups_compile_once_for_each_size() -> None:
    rans.compile_kernels()
    kernels = rans_batch.vector_kernels()
    assert kernels is not None
    before = len(kernels.rounds.signatures)
    assert before >= 2 * kernels.GROUP  # 1 to GROUP chunks, 8- and 16-bit codes
    data = encode_codes(laplacian_codes(9_000_001, 4, seed=4), version=2)  # 5 chunks
    for buffer in (data, bytearray(data), memoryview(b"x" + data)[1:]):
        dtype, chunks = decode_plan(buffer)
        out = np.zeros(9_000_001, dtype=dtype)
        rans_batch.fill_chunks([(c, out[c.start : c.start + c.size]) for c in chunks])
        np.testing.assert_array_equal(out, laplacian_codes(9_000_001, 4, seed=4))
    assert len(kernels.rounds.signatures) == before


def test_without_the_vector_loop_each_chunk_fills_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rans_batch, "_usable", False)
    monkeypatch.setattr(rans_batch, "_kernels", None)
    data, codes = _streams(monkeypatch, 4096)[1]
    dtype, chunks = decode_plan(data)
    assert all(c.coded is None for c in chunks)
    out = np.zeros(codes.size, dtype=dtype)
    rans_batch.fill_chunks([(c, out[c.start : c.start + c.size]) for c in chunks])
    np.testing.assert_array_equal(out, codes)


@needs_vector
def test_corrupt_words_are_refused_or_decode_in_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Words changed after the CRC (a stream's words handed over as they are): every chunk
    either fails its end check or decodes to its size; nothing is read or written outside."""
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", 3000)
    rng = np.random.default_rng(9)
    codes = laplacian_codes(20_000, 8, seed=6)
    data = encode_codes(codes, version=2)
    dtype, chunks = decode_plan(data)
    refused = 0
    for _ in range(60):
        jobs = []
        for c in chunks:
            assert c.coded is not None
            words = bytearray(c.coded.words)
            for at in rng.integers(2 * 8 * 4, len(words), rng.integers(1, 4)):
                words[at] ^= 1 << int(rng.integers(8))
            if rng.random() < 0.3:  # truncated: the loop must stop before the end
                words = words[: len(words) - 4 * int(rng.integers(1, 40))]
            coded = rans_chunks.Coded(memoryview(bytes(words)), *_rest(c.coded))
            guard = np.full(c.size + 64, 0xAB, dtype=dtype)
            jobs.append((rans.Chunk(c.start, c.size, c.fill, coded), guard[32 : 32 + c.size]))
        try:
            rans_batch.fill_chunks(jobs)
        except InvalidPackageError:
            refused += 1
        for _, out in jobs:
            base = out.base
            assert base is not None
            assert (base[:32] == 0xAB).all() and (base[-32:] == 0xAB).all()
    assert refused > 50


def _rest(coded: rans_chunks.Coded) -> tuple[memoryview, np.ndarray, int, int, int]:
    return coded.low, coded.table, coded.precision, coded.raw_bits, coded.index
