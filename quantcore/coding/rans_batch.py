"""Decoding many chunks at once: the v2 chunks of any streams through the vector decoder
(``quantcore.coding.rans_simd``, on AVX-512 or, in 256-bit halves, AVX2), ``GROUP`` of them
advancing together, each replaced by the next as it ends; the trellis streams' chunks
together through ``trellis_batch``; any other chunk (v3, v1, wide tables, or no AVX2) by its
own ``fill``. The codes are the same either way. ``fill_nibbles`` stores 4-bit codes two per
byte, as the vector decoder goes (elsewhere through a per-thread buffer)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import numpy.typing as npt

from quantcore.coding import rans_chunks
from quantcore.coding.parallel import ThreadBuffer
from quantcore.coding.symbols import CodeArray
from quantcore.errors import InvalidPackageError

LANES = rans_chunks.LANES
_ZERO_LOW = np.zeros(8, dtype=np.uint8)  # the low bits of a chunk that has none
_ZERO_LOW.flags.writeable = False
_kernels: ModuleType | None = None
_usable: bool | None = None
_refill: npt.NDArray[np.uint8] | None = None  # the loop's form: None on AVX-512 (rans_simd)
_fewest = 1  # runs of fewer v2 chunks go to the scalar kernel (rans_simd.fewest_chunks)


def vector_kernels() -> ModuleType | None:
    """``rans_simd``, imported on first use, where its loop runs (AVX-512, or AVX2 with
    ``_refill``: ``rans_simd.usable``, ``rans_simd.refill``); else None."""
    global _kernels, _usable, _refill, _fewest
    if _usable is None:
        from quantcore.coding import rans_simd

        _usable = rans_simd.usable()
        _kernels = rans_simd if _usable else None
        _refill = rans_simd.refill()
        _fewest = rans_simd.fewest_chunks()
    return _kernels


def _too_few(kernels: ModuleType | None, chunks: int) -> bool:
    """Whether ``chunks`` v2 chunks decode faster by the scalar kernel (``_fewest``)."""
    return kernels is not None and chunks < _fewest


@dataclass
class _Slot:
    """A chunk being decoded: its arrays and where it is."""

    coded: rans_chunks.Coded
    out: CodeArray  # the codes, or their nibbles (``fill_nibbles``)
    count: int  # codes
    add: int  # added to each nibble
    words: npt.NDArray[np.uint32]
    packed: npt.NDArray[np.uint8]  # the chunk's low bits
    raw: int  # the low bits the loop ORs in: all of them up to 8, else none (added after)
    low: npt.NDArray[np.uint8]  # what the loop reads them from
    states: npt.NDArray[np.uint64]
    pos: int = 2 * LANES
    base: int = 0  # rounds of 8 codes done

    def left(self) -> int:
        """Rounds the vector loop may still do: whole rounds whose 8 bytes of low bits (read
        at once) are inside the chunk's."""
        rounds = self.count // LANES
        if self.raw:
            rounds = min(rounds, (self.low.size - 8) // self.raw + 1)
        return max(0, rounds - self.base)

    def ready(self) -> bool:
        return self.left() > 0 and self.pos <= self.words.size - LANES


_Queued = tuple[rans_chunks.Coded, CodeArray, int, int]  # coded, out, count, add


def fill_chunks(jobs: Sequence[tuple[rans_chunks.Chunk, CodeArray]]) -> None:
    """Decode each chunk into its array (of the chunk's size and the stream's dtype, C
    contiguous); raises ``InvalidPackageError`` for a corrupt chunk, as ``Chunk.fill``."""
    kernels = vector_kernels()
    if _too_few(kernels, sum(chunk.coded is not None for chunk, _ in jobs)):
        kernels = None
    queues: dict[np.dtype, deque[_Queued]] = {}
    trellis = []
    for chunk, out in jobs:
        if kernels is not None and chunk.coded is not None and out.flags.c_contiguous:
            queues.setdefault(out.dtype, deque()).append((chunk.coded, out, chunk.size, 0))
        elif chunk.trellis is not None:
            trellis.append((chunk.trellis, out))
        else:
            chunk.fill(out)
    if trellis:
        from quantcore.coding import trellis_batch

        trellis_batch.decode(trellis)
    for queue in queues.values():
        assert kernels is not None  # queued only then
        _run(kernels, queue, False)


def fill_nibbles(jobs: Sequence[tuple[rans_chunks.Chunk, npt.NDArray[np.uint8], int]]) -> None:
    """Decode each chunk of 8-bit codes (``c``) into its array of ``ceil(size / 2)`` bytes
    as 4-bit values ``c + add``, two per byte, low nibble first (ONNX's INT4 and UINT4
    ``raw_data``: a chunk starting at an even code of its tensor fills whole bytes)."""
    from quantcore.coding import rans_kernels  # compiled: imported (numba too) on first use

    kernels = vector_kernels()
    if _too_few(kernels, sum(chunk.coded is not None for chunk, _, _ in jobs)):
        kernels = None
    queue: deque[_Queued] = deque()
    trellis = []
    for chunk, out, add in jobs:
        if kernels is not None and chunk.coded is not None and out.flags.c_contiguous:
            queue.append((chunk.coded, out, chunk.size, add & 0xF))
        elif chunk.trellis is not None:  # decoded together, then packed
            trellis.append((chunk.trellis, out, add, np.empty(chunk.size, dtype=np.uint8)))
        else:
            codes = _buffer(chunk.size)
            chunk.fill(codes)
            rans_kernels.pack_nibbles(codes, add & 0xF, out)
    if trellis:
        from quantcore.coding import trellis_batch

        trellis_batch.decode([(coded, codes) for coded, _, _, codes in trellis])
        for _, out, add, codes in trellis:
            rans_kernels.pack_nibbles(codes, add & 0xF, out)
    if queue:
        assert kernels is not None
        _run(kernels, queue, True)


# This thread's array of ``n`` codes, reused from chunk to chunk.
_buffer = ThreadBuffer(least=1 << 21).get


def _run(kernels: ModuleType, queue: deque[_Queued], nibbles: bool) -> None:
    rounds = kernels.rounds_nibbles if nibbles else kernels.rounds
    active: list[_Slot] = []
    while queue or active:
        while len(active) < kernels.GROUP and queue:
            slot = _start(*queue.popleft())
            if slot.ready():
                active.append(slot)
            else:
                _finish(kernels, slot, nibbles)
        if not active:
            continue
        states = np.concatenate([s.states for s in active])
        pos = np.array([s.pos for s in active], dtype=np.int64)
        base = np.array([s.base for s in active], dtype=np.int64)
        params = np.array([(s.coded.precision, s.raw, s.add) for s in active], np.int64)
        done = rounds(
            tuple(s.words for s in active),
            tuple(s.coded.table for s in active),
            tuple(s.low for s in active) if any(s.raw for s in active) else None,
            tuple(s.out for s in active),
            states,
            pos,
            base,
            params.ravel(),
            min(s.left() for s in active),
            _refill,
        )
        going = []
        for k, s in enumerate(active):
            s.states = states[k * LANES : (k + 1) * LANES].copy()
            s.pos, s.base = int(pos[k]), s.base + int(done)
            if s.ready():
                going.append(s)
            else:
                _finish(kernels, s, nibbles)
        active = going


def _start(coded: rans_chunks.Coded, out: CodeArray, count: int, add: int) -> _Slot:
    words = rans_chunks._words(coded.words)
    states = rans_chunks.first_states(words, coded.index)
    packed = np.frombuffer(coded.low, dtype=np.uint8) if coded.raw_bits else _ZERO_LOW
    packed.flags.writeable = False
    raw = coded.raw_bits if coded.raw_bits <= 8 else 0  # 8 codes' low bits in one word
    return _Slot(coded, out, count, add, words, packed, raw, packed if raw else _ZERO_LOW,
                 states)  # fmt: skip


def _finish(kernels: ModuleType, s: _Slot, nibbles: bool) -> None:
    c = s.coded
    start = s.base * LANES
    if nibbles:  # 4-bit codes: their low bits (if any) are few, ORed in by the loop
        assert s.raw == c.raw_bits
        ok = kernels.finish_nibbles(s.words, c.table, s.out, s.packed, c.raw_bits, s.states,
                                    s.pos, start, c.precision, s.count, s.add)  # fmt: skip
    else:
        low_from = start if s.raw else 0  # the loop ORed in the low bits before ``start``
        ok = kernels.finish(s.words, c.table, s.out, s.packed, c.raw_bits, s.states, s.pos,
                            start, c.precision, low_from)  # fmt: skip
    if not ok:
        raise InvalidPackageError(
            f"entropy stream chunk {c.index} is corrupt: its words do not decode to "
            f"{s.out.size} symbols"
        )


def compile_vector_kernels() -> None:
    """Compile (or load) the vector loop for 1 to ``GROUP`` chunks of 8- and 16-bit codes,
    where it is used; no rounds are run."""
    kernels = vector_kernels()
    if kernels is None:
        return
    words = np.zeros(2 * LANES, dtype=np.uint32)
    words.flags.writeable = False
    table = np.zeros(2, dtype=np.uint64)
    for dtype in (np.uint8, np.uint16):
        out = np.zeros(0, dtype=dtype)
        variants = (kernels.rounds, kernels.rounds_nibbles) if dtype == np.uint8 else (
            kernels.rounds,)  # fmt: skip
        for rounds in variants:
            for k in range(1, kernels.GROUP + 1):
                counts = np.zeros(k, dtype=np.int64)
                states = np.zeros(k * LANES, dtype=np.uint64)
                params = np.ones(kernels.PARAMS * k, dtype=np.int64)
                for lows in ((_ZERO_LOW,) * k, None):  # None: chunks without low bits
                    rounds((words,) * k, (table,) * k, lows, (out,) * k, states, counts,
                           counts.copy(), params, 0, _refill)  # fmt: skip
        states = np.zeros(LANES, dtype=np.uint64)
        kernels.finish(words, table, out, _ZERO_LOW, 0, states, 0, 0, 1, 0)
        if dtype == np.uint8:
            kernels.finish_nibbles(words, table, out, _ZERO_LOW, 0, states, 0, 0, 1, 0, 0)
