"""Streams v5 to v8 and v10 to v13: trellis-quantized codes under their state's table (v6, v8,
v11, v13: mirrored after a negative index; v7, v8, v10, v11: on the 8-state machine; v12, v13:
on the 32-state one), decoded to the same codes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from quantcore.coding import compact_table, trellis_coder, trellis_plan
from quantcore.coding.entropy import decode_codes, encode_codes
from quantcore.coding.symbols import CRC_AT, HEADER
from quantcore.compress.trellis import trellis_levels
from quantcore.errors import InvalidPackageError, InvalidSpecError

# A machine's plain and mirrored versions as written, by its plain one (5: 4 states, 7: 8
# states, written with compact tables; 12: 32 states).
VERSIONS_OF = {5: (5, 6), 7: (10, 11), 12: (12, 13)}


def _tcq_codes(n: int, seed: int, step: float = 0.2, machine: int = 7) -> tuple[np.ndarray, int]:
    """Shifted codes of TCQ levels of a Laplacian on ``machine``'s path (the stream version
    whose state machine it is), and their ``code_min``."""
    w = np.random.default_rng(seed).laplace(size=n).astype(np.float32)
    m_max = 120
    levels = trellis_levels(w, step, m_max, machine).levels
    return (levels + m_max).astype(np.uint8), -m_max


def _version(stream: bytes) -> int:
    return stream[4]


@pytest.mark.parametrize("machine", [5, 7, 12])
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 1000, 65_537])
def test_round_trip_of_trellis_levels(n: int, machine: int) -> None:
    codes, code_min = _tcq_codes(n, seed=n, machine=machine)
    stream = encode_codes(codes, code_min=code_min, version=5) if n > 1 else None
    if stream is None:  # one code: one symbol, nothing to model
        assert trellis_coder.encode(codes, code_min, 1) is None
        return
    if n > 9:  # a few codes may lie on both machines' paths; these do not
        assert _version(stream) in VERSIONS_OF[machine]
    assert _version(stream) in trellis_coder.VERSIONS
    np.testing.assert_array_equal(decode_codes(stream, count=n), codes)


def test_chunks_start_their_lanes_in_the_path_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several chunks: each lane of each chunk starts in the state the whole path is in."""
    monkeypatch.setattr(trellis_coder, "CHUNK_SYMBOLS", 1000)
    codes, code_min = _tcq_codes(10_007, seed=4)
    stream = trellis_coder.encode(codes, code_min, 2)
    assert stream is not None
    fields = HEADER.unpack_from(stream)
    assert fields[7] == 1000 and fields[9] == 11  # chunk size, chunks
    np.testing.assert_array_equal(decode_codes(stream), codes)


def test_sixteen_bit_codes_and_magnitude_classes() -> None:
    """Wide codes; and weights whose magnitudes come in runs, where the classes pay (K = 8)."""
    rng = np.random.default_rng(7)
    scale = np.repeat(rng.choice([0.05, 3.0], size=400), 500)
    w = (rng.laplace(size=scale.size) * scale).astype(np.float32)
    m_max = 2000
    levels = trellis_levels(w, 0.01, m_max).levels
    codes = (levels + m_max).astype(np.uint16)
    stream = trellis_coder.encode(codes, -m_max, 1)
    assert stream is not None
    np.testing.assert_array_equal(decode_codes(stream), codes)
    fields = HEADER.unpack_from(stream)
    assert fields[2] == 16
    table = compact_table.decode(memoryview(stream)[HEADER.size :][: fields[8]], fields[6], 16,
                                 fields[4], trellis_coder.MAX_CLASSES)  # fmt: skip
    assert table[1] == trellis_coder.CLASSES


def test_v5_is_chosen_for_trellis_codes_and_pays() -> None:
    codes, code_min = _tcq_codes(200_000, seed=1)
    plain = encode_codes(codes)
    chosen = encode_codes(codes, code_min=code_min)
    assert _version(chosen) in VERSIONS_OF[7] and _version(plain) not in trellis_coder.VERSIONS
    # Coding the levels without their state pays for their parity, about a bit a code.
    assert len(chosen) < 0.85 * len(plain)
    np.testing.assert_array_equal(decode_codes(chosen), codes)


def _runs_of_signs(n: int, seed: int, run: int = 9, machine: int = 7) -> tuple[np.ndarray, int]:
    """TCQ codes of weights whose signs come in runs (as neighbouring weights' do)."""
    rng = np.random.default_rng(seed)
    signs = np.repeat(rng.choice([-1.0, 1.0], size=-(-n // run)), run)[:n]
    w = (np.abs(rng.laplace(size=n)) * signs).astype(np.float32)
    m_max = 120
    levels = trellis_levels(w, 0.2, m_max, machine).levels
    return (levels + m_max).astype(np.uint8), -m_max


@pytest.mark.parametrize("machine", [5, 7, 12])
def test_codes_mirrored_after_a_negative_index_pay_where_signs_go_together(
    monkeypatch: pytest.MonkeyPatch, machine: int
) -> None:
    codes, code_min = _runs_of_signs(40_000, seed=6, machine=machine)
    monkeypatch.setattr(trellis_coder, "CHUNK_SYMBOLS", 10_000)  # lanes of several chunks
    mirrored = trellis_coder.encode(codes, code_min, 2)
    assert mirrored is not None and _version(mirrored) == VERSIONS_OF[machine][1]
    np.testing.assert_array_equal(decode_codes(mirrored), codes)
    monkeypatch.setattr(trellis_coder, "_mirrored", lambda flat, code_min, chunk: None)
    plain = trellis_coder.encode(codes, code_min, 2)
    assert plain is not None and _version(plain) == VERSIONS_OF[machine][0]
    np.testing.assert_array_equal(decode_codes(plain), codes)  # v5 still decodes
    assert len(mirrored) < 0.9 * len(plain)  # runs of nine: the sign is nearly known


def test_codes_whose_signs_go_their_own_way_are_not_mirrored() -> None:
    """A Laplacian's signs are independent: the mirror saves next to nothing, and the stream
    that decodes in one pass is kept."""
    codes, code_min = _tcq_codes(100_000, seed=8)
    stream = trellis_coder.encode(codes, code_min, 1)
    assert stream is not None and _version(stream) == trellis_coder.COMPACT_VERSION
    mirrored = trellis_coder._mirrored(codes, code_min, trellis_coder.chunk_size(codes.size))
    assert mirrored is not None  # it could have been: it was not worth its decoding pass


def test_the_mirror_turns_levels_after_a_negative_index_and_back() -> None:
    lane = np.array([0, -2, 0, 3, 4, -1, -4, 0, 2], np.int64)
    codes = np.zeros(8 * lane.size, np.uint8) + 5  # 8 lanes of 9: the first is ``lane``
    codes[: lane.size] = lane + 5
    out = np.empty_like(codes)
    trellis_coder.kernels().mirror(codes, -5, False, out)
    # a level after a negative one (the last non-zero before it) is turned
    np.testing.assert_array_equal(out[: lane.size].astype(np.int64) - 5,
                                  [0, -2, 0, -3, 4, -1, 4, 0, -2])  # fmt: skip
    assert (out[lane.size :] == 5).all()
    trellis_coder.kernels().mirror(out, -5, True, out)
    np.testing.assert_array_equal(out, codes)


def test_codes_whose_mirror_leaves_their_width_keep_v5() -> None:
    codes, _ = _runs_of_signs(5000, seed=7)
    # levels up to +245: -245 < code_min
    assert trellis_coder._mirrored(codes, -10, codes.size) is None
    assert trellis_coder._mirrored(codes, -120, codes.size) is not None


def test_codes_off_a_trellis_path_keep_their_stream() -> None:
    codes = np.random.default_rng(2).integers(0, 16, size=50_000).astype(np.uint8)
    assert trellis_coder.encode(codes, -8, 1) is None
    assert encode_codes(codes, code_min=-8) == encode_codes(codes)
    with pytest.raises(InvalidSpecError, match="version 5 needs code_min"):
        encode_codes(codes, version=5, code_min=-8)
    with pytest.raises(InvalidSpecError, match="version 5 needs code_min"):
        encode_codes(codes, version=5)


@pytest.mark.parametrize("machine", [5, 7, 12])
def test_path_levels_are_what_the_walk_accepts(machine: int) -> None:
    indices = np.random.default_rng(3).integers(-5, 6, size=500)
    levels = trellis_coder.path_levels(indices, machine)
    codes = (levels + 12).astype(np.uint8)
    states = np.empty(codes.size, np.uint8)
    walk = trellis_coder.machine(machine)
    assert trellis_coder.kernels().states_of(codes, -12, *walk, states) == codes.size
    other = trellis_coder.machine(12 - machine)  # the other machine's path: off it soon
    assert trellis_coder.kernels().states_of(codes, -12, *other, states) < 20
    odd_in_q0 = codes.copy()
    odd_in_q0[0] = 12 + 1  # level 1 in state 0 (Q0 holds even levels only)
    assert trellis_coder.kernels().states_of(odd_in_q0, -12, *walk, states) == 0


def _resealed(stream: bytes, body: bytes) -> bytes:
    """``stream``'s header over ``body``, with the CRC-32 made right again."""
    head = stream[:CRC_AT]
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + crc.to_bytes(4, "little") + body


def test_corrupt_streams_are_refused_by_name() -> None:
    codes, code_min = _tcq_codes(5000, seed=5)
    stream = trellis_coder.encode(codes, code_min, 1)
    assert stream is not None
    flipped = bytearray(stream)
    flipped[-3] ^= 0x40
    with pytest.raises(InvalidPackageError, match="CRC-32"):
        decode_codes(bytes(flipped))
    body = bytearray(stream[HEADER.size :])
    body[-5] ^= 0x40  # a word of the last chunk, CRC made right: the decoder itself notices
    with pytest.raises(InvalidPackageError, match="chunk 0 is corrupt"):
        decode_codes(_resealed(stream, bytes(body)))
    with pytest.raises(InvalidPackageError, match="chunk table says"):
        decode_codes(_resealed(stream, stream[HEADER.size : -4]))


def _numpy_decoder_tables(
    code_min: int, k_classes: int, symbols: np.ndarray, freqs: np.ndarray, precision: int,
    dtype: np.dtype,
) -> tuple[np.ndarray, ...]:
    """The decoder's tables as NumPy built them before they were compiled and packed in one
    word a slot (the reference)."""
    contexts, total = freqs.shape[0], 1 << precision
    entry = np.zeros((contexts, total), dtype=np.uint32)
    value = np.zeros((contexts, total), dtype=dtype)
    parity = np.zeros((contexts, total), dtype=np.uint8)
    dist = np.zeros((contexts, total), dtype=np.uint8)
    slots = np.arange(total, dtype=np.int64)
    for c in range(contexts):
        if not freqs[c].any():
            continue
        levels = symbols + code_min
        k = levels // 2 if c // k_classes == 0 else np.where(
            levels > 0, (levels + 1) // 2, np.where(levels < 0, (levels - 1) // 2, 0))
        symbol_of = np.repeat(np.arange(symbols.size), freqs[c])
        cum = np.concatenate([[0], np.cumsum(freqs[c])[:-1]])
        entry[c] = (freqs[c][symbol_of] - 1) | (slots - cum[symbol_of]) << 16
        value[c] = symbols[symbol_of].astype(dtype)
        parity[c] = (k & 1)[symbol_of]
        dist[c] = np.minimum(np.abs(k), 255)[symbol_of]
    return entry, value, parity, dist


@pytest.mark.parametrize(("dtype", "code_min"), [(np.uint8, -120), (np.uint16, -2000)])
def test_compiled_decoder_tables_equal_numpys(dtype: type, code_min: int) -> None:
    """Every context's slots, one symbol's context at precision 16 included."""
    rng = np.random.default_rng(3)
    symbols = np.sort(rng.choice(-2 * code_min + 1, 40, replace=False)).astype(np.int64)
    precision = 16
    freqs = np.zeros((16, symbols.size), np.int64)
    for row in range(14):
        present = rng.random(symbols.size) < 0.6
        weights = rng.integers(1, 1000, symbols.size) * present
        freqs[row] = np.floor(weights / weights.sum() * (1 << precision)).astype(np.int64)
        freqs[row, np.argmax(weights)] += (1 << precision) - freqs[row].sum()
    freqs[15, 7] = 1 << precision  # one symbol; row 14 never met
    table = trellis_plan.decoder_tables(code_min, 8, symbols, freqs, precision)
    fields = (table & 0xFFFF | (table >> 16 & 0xFFFF) << 16, table >> 32 & 0xFFFF,
              table >> 48 & 1, table >> 56)  # fmt: skip
    reference = _numpy_decoder_tables(code_min, 8, symbols, freqs, precision, np.dtype(dtype))
    for built, expected in zip(fields, reference, strict=True):
        np.testing.assert_array_equal(built, expected)


def _machine_of_code(h0: int, h1: int, nu: int) -> tuple[np.ndarray, np.ndarray]:
    """The smallest state machine of the trellis code of parity-check polynomials ``h0``,
    ``h1`` (degree ``nu``): each next quantizer ``z0`` the parity check
    ``z0[n] = Σ_j h0_j z0[n-j] + h1_j z1[n-j]`` over the last ``nu`` quantizers and index
    parities ``z1``, states merged where they behave alike, numbered breadth-first from 0."""
    tap = lambda h, j: (h >> j) & 1  # noqa: E731
    start: tuple[tuple[int, int], ...] = ((0, 0),) * nu
    quantizer, nxt, order = {}, {}, [start]
    for history in order:  # a history: the last nu (quantizer, parity) pairs, newest first
        z0 = 0
        for j, (q, p) in enumerate(history, 1):
            z0 ^= (tap(h0, j) & q) ^ (tap(h1, j) & p)
        quantizer[history] = z0
        for parity in (0, 1):
            after = ((z0, parity), *history[:-1])
            nxt[history, parity] = after
            if after not in quantizer and after not in order:
                order.append(after)
    block = dict(quantizer)  # Moore minimisation: split blocks by where their edges go
    while True:
        signature = {h: (block[h], block[nxt[h, 0]], block[nxt[h, 1]]) for h in order}
        ids: dict[tuple[int, int, int], int] = {}
        split = {h: ids.setdefault(signature[h], len(ids)) for h in order}
        if len(set(split.values())) == len(set(block.values())):
            break
        block = split
    number, first = {block[start]: 0}, [start]
    for history in first:
        for parity in (0, 1):
            b = block[nxt[history, parity]]
            if b not in number:
                number[b] = len(number)
                first.append(nxt[history, parity])
    transitions = np.zeros((len(number), 2), np.int64)
    quantizers = np.zeros(len(number), np.int64)
    for history in first:
        quantizers[number[block[history]]] = quantizer[history]
        for parity in (0, 1):
            transitions[number[block[history]], parity] = number[block[nxt[history, parity]]]
    return transitions, quantizers


@pytest.mark.parametrize(("version", "h0", "h1", "nu"), [
    (5, 0o5, 0o2, 2), (7, 0o17, 0o04, 3), (12, 0o57, 0o22, 5),
])  # fmt: skip
def test_the_machines_are_the_trellis_codes_they_are_said_to_be(
    version: int, h0: int, h1: int, nu: int
) -> None:
    """Up to the numbering of their states (the 32-state one is numbered as built)."""
    transitions, quantizers = _machine_of_code(h0, h1, nu)
    assert quantizers.size == 1 << nu
    expected = _breadth_first(*trellis_coder.machine(version))
    np.testing.assert_array_equal(transitions, expected[0])
    np.testing.assert_array_equal(quantizers, expected[1])
    if version == 12:
        np.testing.assert_array_equal(transitions, trellis_coder.machine(version)[0])


def _breadth_first(
    transitions: np.ndarray, quantizers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The machine with its states numbered breadth-first from state 0 (parity 0 first)."""
    number, order = {0: 0}, [0]
    for state in order:
        for parity in (0, 1):
            after = int(transitions[state, parity])
            if after not in number:
                number[after] = len(number)
                order.append(after)
    renumbered = np.zeros_like(transitions)
    for state in order:
        for parity in (0, 1):
            renumbered[number[state], parity] = number[int(transitions[state, parity])]
    return renumbered, quantizers[order]
