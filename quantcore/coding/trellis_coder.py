"""Streams ``QENT`` versions 5 to 8 and 10 to 13: the codes of a trellis-quantized tensor, each
under the frequency table of its trellis state's quantizer (``quantcore.compress.trellis``).

TCQ levels ``m`` lie on a step-1 grid, but in a given trellis state only every other one can
occur (``Q0``: even levels; ``Q1``: odd levels and zero), and which state a code is in follows
from the codes before it. An order-0 model of ``m`` pays for that parity; coding each code
under its state's table does not: it spends the entropy of the index given the quantizer,
which is what makes TCQ pay. Within a quantizer, the model is also chosen by the magnitude
class of the two indices before it (v3's contexts, ``K`` = 8 classes) where that saves more
than its tables cost; else ``K`` = 1. Codes that are not on a trellis path (any other
tensor's) get no stream: ``encode`` returns None at the first code off the path, usually
within a few.

Version 6 is version 5 over mirrored codes: within each lane, a code that follows a negative
index is coded as its mirror (level ``m`` as ``-m``: the same parity and magnitude, so the
same states and contexts), and the decoder mirrors it back. Neighbouring weights' signs go
together (MPEG NNR's DeepCABAC gives its significance and sign flags the sign of the weight
before as context), so after a negative index the mirror is most often positive, and the
tables, as many as v5's, see a skewed sign. ``encode`` writes whichever of v5 and v6 is
smaller (with ``K`` = 1 or 8 each; v6 by at least ``MIRROR_MIN_GAIN``): measured on the
trellis codes of nudenet at 30 dB weight SQNR, 1.2% off the conditional entropy of v5's
contexts; where a tensor's signs lean one way (ocr-rec's), v5 stays.

Versions 7 and 8 are versions 5 and 6 on DeepCABAC's 8-state machine
(``trellis_kernels.EIGHT_STATES``), which ``quantcore.compress.trellis`` follows: the same
two quantizers and contexts, other states. ``encode`` finds which machine's path the codes are
on (5 and 6 are still written for codes on the 4-state one). Versions 10 and 11, written in
place of 7 and 8, are those with compact tables (``quantcore.coding.compact_table``).
Versions 12 and 13 are 10 and 11 on a 32-state machine (``trellis_kernels.THIRTY_TWO_STATES``),
whose paths reach levels about 0.14 dB closer at the same rate.

Layout (every version): the v2 header (``symbols.HEADER``) with the version, ``raw_bits``
0 and the tables' precision; the table is a zstd frame of ``code_min`` (int32: the level of
code 0), ``K`` (uint16), the symbols as uint16 deltas (byte planes) and ``2K`` rows of uint32
frequencies over them (byte planes; the row of context ``quantizer · K + class``, each summing to
``2**precision`` or all zero); then the chunks' word counts (uint32 each), each chunk's
``LANES`` first trellis states (a byte each), and each chunk's words (the ``LANES`` final
rANS states first).
"""

from __future__ import annotations

import dataclasses
import struct
from types import ModuleType

import numpy as np
import numpy.typing as npt
import zstandard

from quantcore.coding import compact_table, rans
from quantcore.coding.context import (
    LANES,
    _choose_precision,
    _rows,
    class_table,
)
from quantcore.coding.parallel import run_all
from quantcore.coding.symbols import MAGIC, CodeArray, seal

VERSION = 5
MIRRORED_VERSION = 6  # v5's model over codes mirrored after a negative index
EIGHT_STATE_VERSION = 7  # v5 on the 8-state machine
EIGHT_STATE_MIRRORED_VERSION = 8  # v6 on the 8-state machine
COMPACT_VERSION = 10  # v7 with a compact table (quantcore.coding.compact_table)
COMPACT_MIRRORED_VERSION = 11  # v8 with a compact table
WIDE_VERSION = 12  # v10 on the 32-state machine
WIDE_MIRRORED_VERSION = 13  # v11 on the 32-state machine
VERSIONS = (VERSION, MIRRORED_VERSION, EIGHT_STATE_VERSION, EIGHT_STATE_MIRRORED_VERSION,
            COMPACT_VERSION, COMPACT_MIRRORED_VERSION, WIDE_VERSION,
            WIDE_MIRRORED_VERSION)  # fmt: skip
MIRRORED = (MIRRORED_VERSION, EIGHT_STATE_MIRRORED_VERSION, COMPACT_MIRRORED_VERSION,
            WIDE_MIRRORED_VERSION)  # fmt: skip
COMPACT = (COMPACT_VERSION, COMPACT_MIRRORED_VERSION, WIDE_VERSION, WIDE_MIRRORED_VERSION)
# Turning codes back is a second pass over them for the scalar decoder (~20% of a trellis
# stream's decoding time; the vector loop turns them as it goes): mirrored streams are written
# where they save at least this share.
MIRROR_MIN_GAIN = 2e-3
QUANTIZERS = 2
CLASSES = 8  # magnitude classes of the two indices before a code (as v3's)
MAX_CLASSES = 9  # magnitudes are capped at 255: sums reach class 9
CHUNK_SYMBOLS = rans.CHUNK_SYMBOLS
# From this many codes a stream has two chunks at least, which the vector decoder
# (``trellis_batch``, ``trellis_simd.decode_pair``) advances together under the one table:
# 1.4-1.8x one chunk's speed on the real models' large tensors, for 60-76 bytes (a chunk's
# final states, first states and length) a tensor, 0.02-0.19% of the real models'
# packages' code bytes.
PAIRED_CODES = 1 << 17
# From this many codes, a stream of at most ``PAIRED_BITS`` bits a code and at least
# ``PAIRED_MIN_BYTES`` is paired too: at low rates the reference decoder is at its fastest
# against ours, and the pair's bytes weigh least against the margin. nudenet's tensors of
# 24,576-36,864 codes at 7 dB: 70-100 µs alone, 24-29% less paired, for 56-72 bytes each; of
# 9,216-20,736 codes: 0-10% less, or slower. Streams under PAIRED_MIN_BYTES are not paired:
# their pair would add more than about 2% (ocr-det at 6.1 dB, where the trellis and the
# dead-zone packages were 95 bytes apart, took the dead-zone one, whose v4 streams decode a
# flag at a time, 1.7 times slower).
LOW_RATE_PAIRED_CODES = 24_576
PAIRED_BITS = 2.0
PAIRED_MIN_BYTES = 4096
MAX_PRECISION = 16
_TABLE_HEAD = struct.Struct("<iH")


def kernels() -> ModuleType:
    from quantcore.coding import trellis_kernels

    return trellis_kernels


def machine(version: int) -> tuple[np.ndarray, np.ndarray]:
    """The state machine of a stream version: its transitions and each state's quantizer."""
    k = kernels()
    if version in (VERSION, MIRRORED_VERSION):
        return k.FOUR_STATES
    if version in (WIDE_VERSION, WIDE_MIRRORED_VERSION):
        return k.THIRTY_TWO_STATES
    return k.EIGHT_STATES


def chunk_size(count: int, low_rate: bool = False) -> int:
    """The codes a chunk of a stream of ``count`` codes: ``CHUNK_SYMBOLS``, or from
    ``PAIRED_CODES`` on (``LOW_RATE_PAIRED_CODES`` if ``low_rate``) about half of them, at
    most ``CHUNK_SYMBOLS``: ``8q`` codes with ``q // 64`` odd. The decoder writes a round's
    codes to the 8 lane segments at once, ``q`` bytes apart; segments a multiple of 4096
    bytes apart (8192 codes) fall in one set of the first-level cache, and a pair of such
    chunks decoded slower than one chunk at a time."""
    if count < (LOW_RATE_PAIRED_CODES if low_rate else PAIRED_CODES):
        return CHUNK_SYMBOLS
    most = CHUNK_SYMBOLS // LANES
    q = min(-(-count // (2 * LANES)), most)
    if (q // 64) % 2 == 0:
        q = q + 64 if q + 64 <= most else q - 64
    return LANES * q


def _lane_starts(n: int) -> list[int]:
    q, r = n // LANES, n % LANES
    return [lane * q + min(lane, r) for lane in range(LANES)]


def _path(
    flat: CodeArray, code_min: int, compact: bool
) -> tuple[int, int, np.ndarray] | None:
    """The plain and mirrored versions of the machine whose path ``flat`` is on (the 32-state
    one first, v12 and v13, if ``compact``; the 8-state one, v10 and v11 if ``compact``, else
    v7 and v8; the 4-state one) and the state before each code, or None where it is on
    none."""
    eight = (COMPACT_VERSION, COMPACT_MIRRORED_VERSION) if compact else (
        EIGHT_STATE_VERSION, EIGHT_STATE_MIRRORED_VERSION)  # fmt: skip
    wide = [(WIDE_VERSION, WIDE_MIRRORED_VERSION)] if compact else []
    for plain, turned in [*wide, eight, (VERSION, MIRRORED_VERSION)]:
        states = np.empty(flat.size, np.uint8)
        if kernels().states_of(flat, code_min, *machine(plain), states) == flat.size:
            return plain, turned, states
    return None


def encode(
    flat: CodeArray, code_min: int, threads: int | None, compact: bool = True
) -> bytes | None:
    """The smallest of the streams of ``flat`` (codes ``c`` standing for levels
    ``c + code_min``) on the machine whose path it is on (v12 or v13 on the 32-state one, if
    ``compact``; v10 or v11 on the 8-state one, v7 or v8 if not ``compact``; v5 or v6 on the
    4-state one), or None when the levels are on no path or hold fewer than two distinct
    codes."""
    code_min = int(code_min)
    path = _path(flat, code_min, compact) if flat.size else None
    if path is None:
        return None
    chunk = chunk_size(flat.size)
    chosen = _best(flat, code_min, path, chunk)
    if chosen is None:
        return None
    if chunk != chunk_size(flat.size, low_rate=True) and (
        PAIRED_MIN_BYTES <= chosen[0].size <= PAIRED_BITS * flat.size / 8
    ):  # the lanes, so the contexts, follow the chunks: modelled again
        chunk = chunk_size(flat.size, low_rate=True)
        chosen = _best(flat, code_min, path, chunk)
        assert chosen is not None  # the same codes: two symbols at least
    best, codes = chosen
    states = path[2]
    quantizers = machine(best.version)[1]
    width = 8 * flat.itemsize
    rows = np.stack([_rows(best.symbols, best.freqs[c], best.precision, width)
                     for c in range(best.freqs.shape[0])])  # fmt: skip
    classes = class_table(best.k_classes)

    def one(start: int) -> tuple[bytes, memoryview]:
        part = codes[start : start + chunk]
        part_states = states[start : start + chunk]
        words = np.empty(part.size + 2 * LANES, dtype=np.uint32)
        begin = kernels().encode_chunk(part, part_states, code_min, classes, quantizers, rows,
                                       words)  # fmt: skip
        if begin < 0:
            raise AssertionError("a code without a frequency in its own counts")
        firsts = bytes(int(part_states[i]) if i < part.size else 0  # an empty lane: 0
                       for i in _lane_starts(part.size))  # fmt: skip
        return firsts, memoryview(words[begin:].astype("<u4", copy=False).tobytes())

    pieces = run_all(one, range(0, flat.size, chunk), threads)
    lengths = np.array([len(words) // 4 for _, words in pieces], dtype="<u4")
    fields = (MAGIC, best.version, width, 0, best.precision, flat.size, best.symbols.size,
              chunk)  # fmt: skip
    body: list[bytes | memoryview] = [best.table, lengths.tobytes()]
    body += [firsts for firsts, _ in pieces]
    body += [words for _, words in pieces]
    return seal((*fields, len(best.table), len(pieces)), body)


def _best(
    flat: CodeArray, code_min: int, path: tuple[int, int, np.ndarray], chunk: int
) -> tuple[_Model, CodeArray] | None:
    """The smallest model of ``flat`` in chunks of ``chunk`` codes, plain or mirrored (by
    at least ``MIRROR_MIN_GAIN``), and the codes it models; None for fewer than two
    symbols."""
    plain, turned, states = path
    options = _models(flat, states, code_min, plain, chunk)
    if not options:
        return None
    mirrored = _mirrored(flat, code_min, chunk)
    if mirrored is not None:
        options += _models(mirrored, states, code_min, turned, chunk)
    best = min(options, key=lambda o: o.size * (1 + MIRROR_MIN_GAIN * (o.version in MIRRORED)))
    codes = mirrored if best.version in MIRRORED else flat
    assert codes is not None
    return best, codes


@dataclasses.dataclass(frozen=True)
class _Model:
    size: float  # the stream's bytes, tables included (its chunks' few bytes aside)
    version: int
    k_classes: int
    precision: int
    symbols: npt.NDArray[np.intp]
    freqs: npt.NDArray[np.int64]
    table: bytes


def _models(
    codes: CodeArray, states: np.ndarray, code_min: int, version: int, chunk: int
) -> list[_Model]:
    """The models of ``codes`` with ``K`` = 1 and 8, or none for fewer than two symbols."""
    columns = 1 << (8 * codes.itemsize)
    counts = np.zeros((QUANTIZERS * CLASSES, columns), np.int64)
    kernels().count_contexts(codes, states, code_min, class_table(CLASSES), machine(version)[1],
                             chunk, counts)  # fmt: skip
    symbols = np.flatnonzero(counts.sum(axis=0))
    if symbols.size < 2:
        return []
    by_class = np.ascontiguousarray(counts[:, symbols])
    by_quantizer = by_class.reshape(QUANTIZERS, CLASSES, -1).sum(axis=1)
    # The classes' tables are worth their bytes on large tensors only: the cheaper model wins.
    return [_model(codes.size, code_min, symbols, c, k, version)
            for c, k in ((by_quantizer, 1), (by_class, CLASSES))]  # fmt: skip


def _mirrored(flat: CodeArray, code_min: int, chunk: int) -> CodeArray | None:
    """v6's and v8's codes of ``flat`` (``trellis_kernels.mirror``), or None where a mirrored code
    would leave the codes' width."""
    if -int(flat.max()) - 2 * code_min < 0 or -int(flat.min()) - 2 * code_min >= 1 << (
        8 * flat.itemsize
    ):
        return None
    out = np.empty_like(flat)
    for start in range(0, flat.size, chunk):  # lanes are a chunk's
        part = slice(start, start + chunk)
        kernels().mirror(flat[part], code_min, False, out[part])
    return out


def _model(
    count: int, code_min: int, symbols: npt.NDArray[np.intp], counts: npt.NDArray[np.int64],
    k_classes: int, version: int,
) -> _Model:
    """The model with ``counts`` per context, its table and its size."""
    contexts = counts.shape[0]
    cap = max(8, (count // (4 * contexts)).bit_length() - 1)  # the decoder builds the tables
    precision, freqs, bits = _choose_precision(counts, 0, min(cap, MAX_PRECISION))
    if version in COMPACT:
        return min((_compact_model(code_min, symbols, counts, k_classes, version, precision, s)
                    for s in compact_table.STEPS), key=lambda m: m.size)  # fmt: skip
    table = _encode_table(code_min, k_classes, symbols, freqs)
    return _Model(size=bits / 8 + len(table), version=version, k_classes=k_classes,
                  precision=precision, symbols=symbols, freqs=freqs, table=table)  # fmt: skip


def _compact_model(
    code_min: int, symbols: npt.NDArray[np.intp], counts: npt.NDArray[np.int64],
    k_classes: int, version: int, precision: int, steps: int,
) -> _Model:
    """The model with ``counts`` per context on a compact table of ``steps`` values an
    octave."""
    freqs, entries, bits = compact_table.quantized(counts, precision, steps)
    table = compact_table.encode(code_min, k_classes, steps, symbols, entries)
    return _Model(size=bits / 8 + len(table), version=version, k_classes=k_classes,
                  precision=precision, symbols=symbols, freqs=freqs, table=table)  # fmt: skip


def _encode_table(
    code_min: int, k_classes: int, symbols: npt.NDArray[np.intp], freqs: np.ndarray
) -> bytes:
    deltas = symbols.astype("<u2")
    deltas[1:] -= deltas[:-1].copy()
    planes = [
        _TABLE_HEAD.pack(code_min, k_classes),
        deltas.view(np.uint8).reshape(-1, 2).T.tobytes(),
        np.ascontiguousarray(freqs, dtype="<u4").ravel().view(np.uint8).reshape(-1, 4).T.tobytes(),
    ]
    return zstandard.ZstdCompressor(level=3).compress(b"".join(planes))


def path_levels(
    indices: npt.ArrayLike, version: int = EIGHT_STATE_VERSION
) -> npt.NDArray[np.int64]:
    """The levels of a sequence of indices ``k`` on the path from state 0 of ``version``'s
    machine (each index in the quantizer of the state the ones before it lead to)."""
    transitions, quantizers = (a.tolist() for a in machine(version))
    levels = []
    state = 0
    for k in np.asarray(indices, np.int64).tolist():
        levels.append(2 * k if quantizers[state] == 0 else 2 * k - (k > 0) + (k < 0))
        state = transitions[state][k & 1]
    return np.array(levels, np.int64)
