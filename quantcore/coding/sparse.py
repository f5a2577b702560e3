"""Stream ``QENT`` version 14: codes that are almost all one value, as the others' places
and values.

At low rates whole tensors quantize to one code but for a few hundred weights (ocr-rec at
7.7 dB of weight SQNR: 1.6 M of its 2.7 M weights in tensors under 0.05 bits a code). Every
other stream still decodes each of their codes, a flag or a table entry at a time (500-600 M
codes a second on one core, about half of such a package's decoding time). Version 14 fills
the tensor with its mode and decodes only the other codes, each as the run of mode codes
before it and its distance from the mode, under v4's coder and adaptive contexts
(``sparse_kernels``): the decoder's time goes with those codes, not with the tensor.
``entropy.encode_codes`` writes it where no more than ``MAX_SHARE`` of the codes differ from
the mode and it is at most ``SLACK_SHARE`` larger than the smallest other stream (in place of
v4 or v9, a byte more for each ``SPARED_CODES`` codes whose decoding it spares): its bytes are
those of v4 within a few percent either way (a gap's flags cost what v4's zero flags between
two non-mode codes cost), and it decodes many times faster.

Layout (integers little-endian; varints are LEB128)::

    magic b"QENT", version 14 (1 byte), flags (1 byte: bit 0 the codes are 16-bit wide),
    count (varint), mode (varint), number of codes other than the mode (varint, at least 1),
    CRC-32 of the bytes before it and of the payload (4 bytes),
    payload: the range coder's bytes, trailing zeros trimmed

Version 15 is version 14 for the codes of a trellis-quantized tensor (levels on the path of
the 8- or 32-state machine of v9 and v12) whose most frequent level is 0. Level 0 belongs to
both of the machine's quantizers, so a run of it follows the machine's parity-0 transitions;
a code of another level is coded as its place and its trellis index (as v9 codes one, under
its state's quantizer's contexts). Its place: the quantizer of its state (a flag, where the
run from the state after the code before it meets both) and how many places of that
quantizer the run passed (as v14's gap). Where a quantizer's zero is all but certain (Q0's
cell is twice Q1's), its places cost nothing, as under v12's per-state tables: on the
sparse trellis tensors of the benchmark's models v15 is 4-12% smaller than v12 and 0-30%
smaller than v14. Its layout is v14's with ``-code_min`` (the code of level 0) in place of
the mode and flag bit 1 set for the 32-state machine.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import numpy as np
import numpy.typing as npt

from quantcore.coding import adaptive, rans, trellis_coder
from quantcore.coding.adaptive import WIDE, _varint, open_sealed, seal
from quantcore.coding.symbols import HEADER, MAGIC, CodeArray
from quantcore.errors import InvalidPackageError

VERSION = 14
TRELLIS_VERSION = 15  # v14 over trellis indices, the state's quantizer known at each code
THIRTY_TWO = 2  # v15's flag: the codes are on the 32-state machine's path (else 8-state)
MAX_SHARE = 1 / 16  # of codes other than the mode, past which v2-v13 decode as fast
# Of levels other than 0, past which a table-coded trellis stream (v5-v13) decodes faster
# than v15 (60-95 ns a code of another level, with AVX-512): one of two chunks or more
# decodes 2.4-2.9 ns a code (a pair's 16 lanes in flight), a stream of one chunk 3.2-4.8 ns
# (its 8 lanes). On ocr-det, ocr-rec and nudenet at 7-13 dB, v15 decoded 1.2-2.5 times
# faster at 2-4% of such codes, and a paired v12 1.5 times faster at 5.8% (nudenet's
# model.9); a one-chunk stream, as fast as v15 at 5.4-5.8%, is replaced up to MAX_SHARE.
TRELLIS_MAX_SHARE = 1 / 24
# The same in place of an order-0 or context stream (v2, v3: about 1 ns a code, 4 chunks at
# once), written where trellis codes code smaller that way.
TABLE_MAX_SHARE = 1 / 64
FLAGWISE = (adaptive.VERSION, adaptive.TRELLIS_VERSION)  # v4, v9: every code a flag at a time
RANGE_CODED = (*FLAGWISE, VERSION, TRELLIS_VERSION)  # versions decoded a flag at a time
SLACK_SHARE = 0.01  # of the smallest other stream's bytes, that v14 may add
# In place of a stream decoded a flag at a time (v4: 4-10 ns a code on a Zen 4; v9 more), v14
# may add a byte more for each SPARED_CODES codes it spares that decoder, 2 µs of decoding a
# byte: v14 takes about 8 µs and 40-60 ns a code other than the mode (100-400 at a few dozen
# of them), so the codes spared are those beyond SPARED_PER_OTHER a code of another value.
# ocr-det at 3.9 dB: its v4 tensors of 36,864 and 147,456 codes with 0.1-1.4% of other values
# decoded 5-26 times faster as v14 (1.51 against 0.19 ms in all) for 2-7% more of their bytes
# (131 bytes, 0.28% of the package).
SPARED_CODES = 512
SPARED_PER_OTHER = 16
MAX_CODES = 1 << 31  # a header claiming more is corrupt


def kernels() -> ModuleType:
    """The compiled kernels, imported (and numba with them) on first use."""
    from quantcore.coding import sparse_kernels

    return sparse_kernels


def worth_trying(count: int, counts: npt.NDArray[np.int64]) -> bool:
    """Whether ``count`` codes of bincount ``counts`` are sparse enough for v14."""
    if not count or count > MAX_CODES:
        return False
    others = count - int(counts.max())
    return 0 < others <= count * MAX_SHARE


def trellis_worth_trying(
    count: int, counts: npt.NDArray[np.int64], code_min: int, replacing: bytes
) -> bool:
    """Whether ``count`` trellis codes of bincount ``counts``, code ``-code_min`` standing
    for level 0, are sparse enough for v15 to decode faster than the stream ``replacing``:
    a range-coded one (v4, v9, v14: a flag at a time) or a trellis stream of one chunk up to
    ``MAX_SHARE`` of codes of other levels, a trellis stream of more chunks up to
    ``TRELLIS_MAX_SHARE``, another up to ``TABLE_MAX_SHARE``."""
    zero = -code_min
    if not count or count > MAX_CODES or not 0 <= zero < counts.size:
        return False
    others = count - int(counts[zero])
    version = replacing[4]
    if version in RANGE_CODED:
        share = MAX_SHARE
    elif version in trellis_coder.VERSIONS:
        chunks = HEADER.unpack_from(replacing)[9]
        share = MAX_SHARE if chunks <= 1 else TRELLIS_MAX_SHARE
    else:
        share = TABLE_MAX_SHARE
    return 0 < others <= count * share


def most_bytes(other: bytes, count: int, others: int) -> int:
    """The most bytes a v14 stream of ``count`` codes, ``others`` of them not the mode, may
    take in place of the stream ``other``: ``SLACK_SHARE`` more, and where ``other`` is
    decoded a flag at a time, a byte more for each ``SPARED_CODES`` codes it spares."""
    most = math.floor(len(other) * (1 + SLACK_SHARE))
    if other[4] in FLAGWISE:
        most += max(count - SPARED_PER_OTHER * others, 0) // SPARED_CODES
    return most


def accept(sparse_bytes: int, other: bytes, count: int, others: int) -> bool:
    """Whether v14's ``sparse_bytes`` may replace the stream ``other`` (``most_bytes``)."""
    return sparse_bytes <= most_bytes(other, count, others)


def encode(
    flat: CodeArray, counts: npt.NDArray[np.int64], limit: int | None = None
) -> bytes | None:
    """The v14 stream of ``flat`` (whose bincount is ``counts``), which must hold a code
    other than its mode; None if ``limit`` is given and the coder's bytes would pass it."""
    mode = int(np.argmax(counts))
    others = flat.size - int(counts[mode])
    if others <= 0:
        raise ValueError("stream v14 needs a code other than the mode")
    most = kernels().SLACK * (others + 1)
    if limit is not None:
        most = min(most, limit + kernels().SLACK)
    out = np.zeros(most, dtype=np.uint8)
    end = kernels().encode(flat, mode, out)
    if end < 0:
        return None
    payload = out[1:end].tobytes()  # LZMA's first byte is always zero
    head = MAGIC + bytes([VERSION, WIDE if flat.dtype.itemsize == 2 else 0])
    return seal(head + _varint(flat.size) + _varint(mode) + _varint(others), payload)


def encode_trellis(flat: CodeArray, code_min: int, limit: int | None = None) -> bytes | None:
    """The v15 stream of ``flat``, codes of levels ``code + code_min`` on the 32- or 8-state
    trellis path of which at least one is not level 0; None where the levels are on neither
    path, level 0 has no code, or if ``limit`` is given and the coder's bytes would pass
    it."""
    zero = -code_min
    if not 0 <= zero < 1 << (8 * flat.dtype.itemsize):
        return None
    others = flat.size - int(np.count_nonzero(flat == zero))
    if not others:
        raise ValueError("stream v15 needs a code of a level other than 0")
    most = kernels().SLACK * (others + 1)
    if limit is not None:
        most = min(most, limit + kernels().SLACK)
    out = np.zeros(most, dtype=np.uint8)
    for flag in (THIRTY_TWO, 0):
        transitions, quantizers, _, counts, _ = _machine(flag)
        end = kernels().encode_trellis(flat, int(code_min), transitions, quantizers, counts, out)
        if end == -1:
            return None
        if end >= 0:
            payload = out[1:end].tobytes()  # LZMA's first byte is always zero
            wide = WIDE if flat.dtype.itemsize == 2 else 0
            head = MAGIC + bytes([TRELLIS_VERSION, wide | flag])
            return seal(head + _varint(flat.size) + _varint(zero) + _varint(others), payload)
    return None


@functools.cache
def _machine(flag: int) -> tuple[np.ndarray, ...]:
    """v15's machine (transitions, quantizers) and its tables of runs of level 0 (see
    ``sparse_kernels.decode_trellis``): ``runs``, ``counts`` and ``offsets``."""
    from quantcore.coding import trellis_coder

    version = trellis_coder.WIDE_VERSION if flag else trellis_coder.EIGHT_STATE_VERSION
    transitions, quantizers = trellis_coder.machine(version)
    states = len(quantizers)
    runs = [np.arange(states)]
    while len(runs) == 1 or not np.array_equal(runs[-1], runs[0]):
        runs.append(transitions[runs[-1], 0])
    table = np.array(runs[:-1], dtype=np.int64)
    period = len(table)
    counts = np.zeros((states, 2), dtype=np.int64)
    offsets = np.zeros((states, 2, period), dtype=np.int64)
    for s in range(states):
        for r in range(period):
            q = quantizers[table[r, s]]
            offsets[s, q, counts[s, q]] = r
            counts[s, q] += 1
    return transitions, quantizers, table, counts, offsets


def plan(view: memoryview) -> tuple[np.dtype, list[rans.Chunk]]:
    """The dtype and the one chunk of a v14 or v15 stream, after checking its header and
    CRC."""
    trellis = view[4] == TRELLIS_VERSION
    name = f"v{view[4]}"
    allowed = WIDE | THIRTY_TWO if trellis else WIDE
    if len(view) < 6 + 3 + 4 or view[5] & ~allowed:
        raise InvalidPackageError(f"entropy stream {name} header is truncated or corrupt")
    flags = view[5]
    (count, mode, others), payload = open_sealed(view, 3)
    width = 16 if flags & WIDE else 8
    dtype = np.dtype(np.uint16 if flags & WIDE else np.uint8)
    if count > MAX_CODES or mode >= 1 << width or not 0 < others <= count:
        raise InvalidPackageError(f"entropy stream {name} has {count=}, {mode=}, {others=}")
    data = np.frombuffer(payload, dtype=np.uint8)

    def fill(part: CodeArray) -> None:
        top = (1 << width) - 1
        if trellis:
            ok = kernels().decode_trellis(data, -mode, top, others,
                                          *_machine(flags & THIRTY_TWO), part)  # fmt: skip
        else:
            ok = kernels().decode(data, mode, top, others, part)
        if not ok:
            raise InvalidPackageError(
                f"entropy stream {name} is corrupt: its payload does not decode to {others} "
                f"codes within {count}"
            )

    return dtype, [rans.Chunk(0, count, fill)]


def compile_kernels() -> None:
    """Compile (or load) the v14 and v15 kernels for 8- and 16-bit codes."""
    from quantcore.coding.trellis_coder import path_levels

    levels = path_levels([0, 0, 1, 0, 0, 0, -1, 0, 2, 0] * 4)
    for dtype in (np.uint8, np.uint16):
        codes: CodeArray = np.array([0] * 30 + [1, 200, 0, 3], dtype=dtype)
        on_path: CodeArray = (levels + 3).astype(dtype)
        for stream in (encode(codes, np.bincount(codes)), encode_trellis(on_path, -3)):
            assert stream is not None
            _, chunks = plan(memoryview(stream))
            for c in chunks:
                c.fill(np.empty(c.size, dtype=dtype))
