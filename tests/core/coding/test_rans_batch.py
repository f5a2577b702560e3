"""The vector decoder of stream v2 (``rans_batch``, ``rans_simd``): the codes of the scalar
kernel whatever the chunks grouped together, and corrupt chunks refused without reading out
of bounds. Each test runs with each form of the loop this CPU can run (AVX-512's and AVX2's;
an AVX-512 CPU runs both)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from quantcore.coding import rans, rans_batch, rans_chunks, rans_simd
from quantcore.coding.entropy import decode_plan, encode_codes
from quantcore.errors import InvalidPackageError
from tests.core.coding.test_context import correlated_codes
from tests.core.coding.test_entropy import laplacian_codes


@pytest.fixture(params=["avx512", "avx2"])
def vector(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``rans_batch`` decoding with one form of the vector loop (skipped where the CPU cannot
    run it)."""
    wide = request.param == "avx512"
    if not (rans_simd.available() if wide else rans_simd.usable()):
        pytest.skip(f"this CPU lacks {request.param}")
    monkeypatch.setattr(rans_batch, "_kernels", rans_simd)
    monkeypatch.setattr(rans_batch, "_usable", True)
    monkeypatch.setattr(rans_batch, "_refill", None if wide else rans_simd.REFILL_ROWS)
    monkeypatch.setattr(rans_batch, "_fewest", 1)  # every chunk count: the loop
    return rans_simd


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


@pytest.mark.usefixtures("vector")
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


def test_the_groups_compile_once_for_each_size(vector: ModuleType) -> None:
    rans.compile_kernels()
    kernels = rans_batch.vector_kernels()
    assert kernels is vector
    before = len(kernels.rounds.signatures)
    assert before >= 2 * kernels.GROUP  # 1 to GROUP chunks, 8- and 16-bit codes
    data = encode_codes(laplacian_codes(9_000_001, 4, seed=4), version=2)  # 5 chunks
    for buffer in (data, bytearray(data), memoryview(b"x" + data)[1:]):
        dtype, chunks = decode_plan(buffer)
        out = np.zeros(9_000_001, dtype=dtype)
        rans_batch.fill_chunks([(c, out[c.start : c.start + c.size]) for c in chunks])
        np.testing.assert_array_equal(out, laplacian_codes(9_000_001, 4, seed=4))
    assert len(kernels.rounds.signatures) == before


def test_groups_without_low_bits_take_the_loop_that_reads_none(
    vector: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group of chunks none of which has raw low bits runs the loop given ``lows`` None;
    a group with any, the loop that ORs them in: the codes of both are the stream's."""
    rans.compile_kernels()
    given: list[bool] = []
    rounds = vector.rounds

    def recorded(*args: object) -> int:
        given.append(args[2] is None)
        return int(rounds(*args))

    monkeypatch.setattr(vector, "rounds", recorded)
    for bits, none in ((3, True), (8, False)):
        given.clear()
        codes = laplacian_codes(200_001, bits, seed=bits)
        dtype, chunks = decode_plan(encode_codes(codes, version=2))
        assert all(c.coded is not None and (c.coded.raw_bits == 0) == none for c in chunks)
        out = np.zeros(codes.size, dtype=dtype)
        rans_batch.fill_chunks([(c, out[c.start : c.start + c.size]) for c in chunks])
        np.testing.assert_array_equal(out, codes)
        assert given and set(given) == {none}


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


@pytest.mark.usefixtures("vector")
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


def _nibble_streams(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, np.ndarray]]:
    """4-bit codes in chunks of 1000 (an odd tail too): order-0 (v2, some with raw low bits)
    and context-coded (v3, decoded by its own ``fill``)."""
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", 1000)
    rng = np.random.default_rng(11)
    cases = [
        (laplacian_codes(9_001, 4, seed=12), 2),
        # a uniform low bit: stored raw beside the words, ORed in by the loop
        ((laplacian_codes(7_003, 3, seed=14) * 2 + rng.integers(0, 2, 7_003)).astype(np.uint8), 2),
        (rng.integers(0, 16, 3_001).astype(np.uint8), 2),  # all raw: each chunk its own fill
        (rng.integers(0, 3, 5).astype(np.uint8), 2),  # fewer codes than a round
        (correlated_codes(20_001, 4, seed=13), 3),
    ]
    return [(encode_codes(c, version=v), c) for c, v in cases]


@pytest.mark.usefixtures("vector")
def test_nibbles_are_the_codes_packed_two_a_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    _check_nibbles(monkeypatch)


def test_nibbles_without_a_vector_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rans_batch, "_usable", False)
    monkeypatch.setattr(rans_batch, "_kernels", None)
    _check_nibbles(monkeypatch)


def _check_nibbles(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs, expected = [], []
    for k, (data, codes) in enumerate(_nibble_streams(monkeypatch)):
        add = (-8, 0, 5, 3, -1)[k]
        packed = np.full((codes.size + 1) // 2 + 8, 0xAB, dtype=np.uint8)  # a guard after
        for c in decode_plan(data)[1]:
            jobs.append((c, packed[c.start // 2 : (c.start + c.size + 1) // 2], add))
        reference = np.zeros((codes.size + 1) // 2, dtype=np.uint8)
        rans.pack_nibbles(codes, add, reference)
        expected.append((packed, reference))
    rans_batch.fill_nibbles(jobs)
    for packed, reference in expected:
        np.testing.assert_array_equal(packed[: reference.size], reference)
        assert (packed[reference.size :] == 0xAB).all()


def test_the_loop_follows_the_features_numba_compiles_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache built for another CPU (``NUMBA_CPU_NAME``) gets no vector loop unless its
    features are named; named features choose the loop (an AVX2 machine on any host)."""
    from numba.core import config

    monkeypatch.setattr(config, "CPU_NAME", "znver3", raising=False)
    monkeypatch.setattr(config, "CPU_FEATURES", None, raising=False)
    assert not rans_simd.usable()
    monkeypatch.setattr(config, "CPU_FEATURES", "+sse4.2,+avx2,-avx512f,-avx512dq")
    assert rans_simd.usable() and not rans_simd.available()
    assert rans_simd.refill() is rans_simd.REFILL_ROWS
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+avx512f,+avx512dq,+avx512vl")
    assert rans_simd.available() and rans_simd.refill() is None
    monkeypatch.setattr(config, "CPU_FEATURES", "+sse4.2,-avx2")
    assert not rans_simd.usable()


def test_the_benchmarks_smaller_cpu_gets_the_avx2_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench.cpu_features --off avx512``: this CPU's features as a CPU without AVX-512's."""
    from numba.core import config

    from bench.cpu_features import features

    if not rans_simd.usable():
        pytest.skip("this CPU lacks AVX2")
    monkeypatch.setattr(config, "CPU_FEATURES", features(["avx512"]), raising=False)
    assert rans_simd.usable() and not rans_simd.available()


def test_each_cpu_takes_the_loop_from_its_fewest_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Zen 1 (256-bit operations in two halves) decodes fewer v2 chunks than a group by the
    scalar kernel, every CPU with AVX-512 a chunk alone; other CPUs take the loop for any
    number."""
    from numba.core import config

    avx2, avx512 = "+sse4.2,+avx2,-avx512f,-avx512dq", "+avx2,+avx512f,+avx512dq,+avx512vl"
    cases = [("znver1", avx2, rans_simd.GROUP), ("bdver4", avx2, rans_simd.GROUP),
             ("znver3", avx2, 1), ("haswell", avx2, 1), ("znver1", avx512, 2),
             ("znver4", avx512, 2), ("rocketlake", avx512, 2), ("sapphirerapids", avx512, 2),
             ("rocketlake", avx2, 1)]  # fmt: skip
    for cpu, features, fewest in cases:
        monkeypatch.setattr(config, "CPU_NAME", cpu, raising=False)
        monkeypatch.setattr(config, "CPU_FEATURES", features, raising=False)
        assert rans_simd.compiled_cpu() == cpu
        assert rans_simd.fewest_chunks() == fewest, cpu


@pytest.mark.usefixtures("vector")
@pytest.mark.parametrize("fewest", [2, rans_simd.GROUP])
@pytest.mark.parametrize("streams", [1, 2, 5])
def test_runs_of_too_few_chunks_decode_by_the_scalar_kernel(
    streams: int, fewest: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of fewer chunks than ``_fewest`` never enters the loop (its rounds are not
    called), a longer run does; the codes are the same either way."""
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", 4096)
    monkeypatch.setattr(rans_batch, "_fewest", fewest)
    calls = []
    rounds = rans_simd.rounds
    monkeypatch.setattr(rans_simd, "rounds", lambda *a: calls.append(1) or rounds(*a))
    jobs, expected = [], []
    for seed in range(streams):
        codes = laplacian_codes(3_000, 4, seed=seed)  # one chunk each
        dtype, chunks = decode_plan(encode_codes(codes, version=2))
        out = np.zeros(codes.size, dtype=dtype)
        jobs += [(c, out[c.start : c.start + c.size]) for c in chunks]
        expected.append((out, codes))
    rans_batch.fill_chunks(jobs)
    for out, codes in expected:
        np.testing.assert_array_equal(out, codes)
    assert bool(calls) is (len(jobs) >= fewest)
