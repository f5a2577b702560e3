"""Decoding many chunks at once: the v2 chunks of any streams through the vector decoder
(``quantcore.coding.rans_simd``), ``GROUP`` of them advancing together, each replaced by
the next as it ends; any other chunk (v3, v1, wide tables, or no AVX-512) by its own
``fill``. The codes are the same either way."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import numpy.typing as npt

from quantcore.coding import rans_chunks
from quantcore.coding.symbols import CodeArray
from quantcore.errors import InvalidPackageError

LANES = rans_chunks.LANES
_ZERO_LOW = np.zeros(8, dtype=np.uint8)  # the low bits of a chunk that has none
_ZERO_LOW.flags.writeable = False
_kernels: ModuleType | None = None
_usable: bool | None = None


def vector_kernels() -> ModuleType | None:
    """``rans_simd``, imported on first use, or None where its loop would not pay."""
    global _kernels, _usable
    if _usable is None:
        from quantcore.coding import rans_simd

        _usable = rans_simd.available()
        _kernels = rans_simd if _usable else None
    return _kernels


@dataclass
class _Slot:
    """A chunk being decoded: its arrays and where it is."""

    coded: rans_chunks.Coded
    out: CodeArray
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
        rounds = self.out.size // LANES
        if self.raw:
            rounds = min(rounds, (self.low.size - 8) // self.raw + 1)
        return max(0, rounds - self.base)

    def ready(self) -> bool:
        return self.left() > 0 and self.pos <= self.words.size - LANES


def fill_chunks(jobs: Sequence[tuple[rans_chunks.Chunk, CodeArray]]) -> None:
    """Decode each chunk into its array (of the chunk's size and the stream's dtype, C
    contiguous); raises ``InvalidPackageError`` for a corrupt chunk, as ``Chunk.fill``."""
    kernels = vector_kernels()
    queues: dict[np.dtype, deque[tuple[rans_chunks.Coded, CodeArray]]] = {}
    for chunk, out in jobs:
        if kernels is not None and chunk.coded is not None and out.flags.c_contiguous:
            queues.setdefault(out.dtype, deque()).append((chunk.coded, out))
        else:
            chunk.fill(out)
    for queue in queues.values():
        assert kernels is not None  # queued only then
        _run(kernels, queue)


def _run(kernels: ModuleType, queue: deque[tuple[rans_chunks.Coded, CodeArray]]) -> None:
    active: list[_Slot] = []
    while queue or active:
        while len(active) < kernels.GROUP and queue:
            slot = _start(*queue.popleft())
            if slot.ready():
                active.append(slot)
            else:
                _finish(kernels, slot)
        if not active:
            continue
        states = np.concatenate([s.states for s in active])
        pos = np.array([s.pos for s in active], dtype=np.int64)
        base = np.array([s.base for s in active], dtype=np.int64)
        params = np.array([(s.coded.precision, s.raw) for s in active], np.int64)
        done = kernels.rounds(
            tuple(s.words for s in active),
            tuple(s.coded.table for s in active),
            tuple(s.low for s in active),
            tuple(s.out for s in active),
            states,
            pos,
            base,
            params.ravel(),
            min(s.left() for s in active),
        )
        going = []
        for k, s in enumerate(active):
            s.states = states[k * LANES : (k + 1) * LANES].copy()
            s.pos, s.base = int(pos[k]), s.base + int(done)
            if s.ready():
                going.append(s)
            else:
                _finish(kernels, s)
        active = going


def _start(coded: rans_chunks.Coded, out: CodeArray) -> _Slot:
    words = rans_chunks._words(coded.words)
    states = rans_chunks.first_states(words, coded.index)
    packed = np.frombuffer(coded.low, dtype=np.uint8) if coded.raw_bits else _ZERO_LOW
    packed.flags.writeable = False
    raw = coded.raw_bits if coded.raw_bits <= 8 else 0  # 8 codes' low bits in one word
    return _Slot(coded, out, words, packed, raw, packed if raw else _ZERO_LOW, states)


def _finish(kernels: ModuleType, s: _Slot) -> None:
    c = s.coded
    start = s.base * LANES
    low_from = start if s.raw else 0  # the loop ORed in the low bits before ``start``
    ok = kernels.finish(s.words, c.table, s.out, s.packed, c.raw_bits, s.states, s.pos, start,
                        c.precision, low_from)  # fmt: skip
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
        for k in range(1, kernels.GROUP + 1):
            counts = np.zeros(k, dtype=np.int64)
            states = np.zeros(k * LANES, dtype=np.uint64)
            params = np.ones(2 * k, dtype=np.int64)
            kernels.rounds((words,) * k, (table,) * k, (_ZERO_LOW,) * k, (out,) * k, states,
                           counts, counts.copy(), params, 0)  # fmt: skip
        states = np.zeros(LANES, dtype=np.uint64)
        kernels.finish(words, table, out, _ZERO_LOW, 0, states, 0, 0, 1, 0)
