"""Decoding many trellis chunks at once (streams v5 to v8 and v10 to v13,
``quantcore.coding.trellis_coder``): through the vector loop (``trellis_simd``), ``GROUP``
chunks of any streams advancing together, each replaced by the next as it ends, then each
finished by the scalar step; without AVX2, each by the scalar kernel alone. The codes are
the same either way.

One chunk's 8 lanes are one chain of dependent steps (a code's context, its table entry,
the rANS update and the words it reads), so one chunk alone leaves the core waiting: on a
Zen 4 core, a chunk of the real models' large trellis tensors (tables of 0.25-1 MB) decodes at
270-380 M codes a second alone and 1.4-1.8 times that beside the other chunk of its tensor
(``trellis_coder.chunk_size``); beside another tensor's, whose table competes for the
second-level cache, only 5-10% faster.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from quantcore.coding.rans_chunks import LANES, STATES, TrellisCoded
from quantcore.coding.symbols import CodeArray
from quantcore.errors import InvalidPackageError


def _kernels() -> ModuleType:
    from quantcore.coding import trellis_kernels

    return trellis_kernels


_usable: bool | None = None
# The vector loop's refill: None on AVX-512 (expanding loads, next states permuted in
# registers), ``rans_simd.REFILL_ROWS`` on AVX2 alone (``trellis_simd._rounds_codegen``).
_refill: npt.NDArray[np.uint8] | None = None


def next_states(transitions: npt.NDArray[np.int64], quantizers: npt.NDArray[np.int64],
                k_classes: int) -> npt.NDArray[np.int32]:  # fmt: skip
    """The vector loop's table of a machine (at most ``STATES`` states) for a stream of
    ``k_classes`` magnitude classes: at ``STATES * parity + state``, the next state and its
    quantizer times the classes (bits 8 and up: the first context of its table rows)."""
    nexts = np.zeros((2, STATES), dtype=np.int32)
    following = transitions.T
    nexts[:, : following.shape[1]] = following | (quantizers[following] * k_classes) << 8
    return nexts.ravel()


def vector_kernels() -> ModuleType | None:
    """``trellis_simd``, imported on first use, where the CPU has AVX-512 or AVX2
    (``rans_simd.usable``; ``_refill`` says which form of the loop); else None."""
    global _usable, _refill
    if _usable is None:
        from quantcore.coding import rans_simd

        _usable = rans_simd.usable()
        _refill = rans_simd.refill()
    if not _usable:
        return None
    from quantcore.coding import trellis_simd

    return trellis_simd


@dataclass
class _Slot:
    """A chunk being decoded by the vector loop: where each lane is (``trellis_kernels.
    first_lanes``), the next word and the rounds done."""

    coded: TrellisCoded
    out: CodeArray
    lanes: npt.NDArray[np.uint64]
    params: npt.NDArray[np.int64]
    pos: int = 2 * LANES
    base: int = 0

    def left(self) -> int:
        return self.out.size // LANES - self.base

    def ready(self) -> bool:
        return self.left() > 0 and self.pos <= self.coded.words.size - LANES


def decode(jobs: Sequence[tuple[TrellisCoded, CodeArray]]) -> None:
    """Decode each chunk into its array (of the chunk's size, C contiguous); raises
    ``InvalidPackageError`` naming the first chunk whose words do not decode to its codes."""
    vector = vector_kernels()
    if vector is not None and all(out.flags.c_contiguous for _, out in jobs):
        if len(jobs) == 1:
            _alone(vector, *jobs[0])
            return
        if len(jobs) == 2 and jobs[0][0].table is jobs[1][0].table:  # a paired tensor's
            _pair(vector, jobs)
            return
    queues: dict[np.dtype, deque[tuple[TrellisCoded, CodeArray]]] = {}
    for coded, out in jobs:
        if vector is not None and out.flags.c_contiguous:
            queues.setdefault(out.dtype, deque()).append((coded, out))
        else:
            ok = _kernels().decode_chunk(coded.words, coded.precision, coded.starts,
                                         coded.classes, coded.transitions, coded.quantizers,
                                         coded.table, out)  # fmt: skip
            _done(coded, out, ok, None, 0)
    for queue in queues.values():
        assert vector is not None
        _run(vector, queue)


def _run(vector: ModuleType, queue: deque[tuple[TrellisCoded, CodeArray]]) -> None:
    active: list[_Slot] = []
    while queue or active:
        while len(active) < vector.GROUP and queue:
            slot = _start(vector, *queue.popleft())
            if slot.ready():
                active.append(slot)
            else:
                _finish(slot)
        if not active:
            continue
        lanes = np.concatenate([s.lanes for s in active])
        pos = np.array([s.pos for s in active], dtype=np.int64)
        base = np.array([s.base for s in active], dtype=np.int64)
        done = vector.rounds(
            tuple(s.coded.words for s in active),
            tuple(s.coded.table for s in active),
            tuple(s.coded.nexts for s in active),
            tuple(s.out for s in active),
            lanes,
            pos,
            base,
            np.concatenate([s.params for s in active]),
            min(s.left() for s in active),
            _refill,
        )
        going = []
        size = lanes.size // len(active)
        for k, s in enumerate(active):
            s.lanes = lanes[k * size : (k + 1) * size]
            s.pos, s.base = int(pos[k]), s.base + int(done)
            if s.ready():
                going.append(s)
            else:
                _finish(s)
        active = going


def _alone(vector: ModuleType, coded: TrellisCoded, out: CodeArray) -> None:
    """One chunk through ``trellis_simd.decode_alone``: the vector loop and the scalar step
    in one compiled call, without ``_run``'s bookkeeping for several chunks."""
    mirrored = coded.mirror_min is not None
    ok = vector.decode_alone(coded.words, coded.starts, coded.table, coded.nexts,
                             coded.classes, coded.transitions, coded.quantizers,
                             coded.precision, mirrored, coded.mirror_min or 0, out,
                             _refill)  # fmt: skip
    if not ok:
        _corrupt(coded, out)


def _pair(vector: ModuleType, jobs: Sequence[tuple[TrellisCoded, CodeArray]]) -> None:
    """The two chunks of one stream through ``trellis_simd.decode_pair``: advanced together
    and finished in one compiled call."""
    (a, out_a), (b, out_b) = jobs
    failed = vector.decode_pair(a.words, a.starts, out_a, b.words, b.starts, out_b, a.table,
                                a.nexts, a.classes, a.transitions, a.quantizers, a.precision,
                                a.mirror_min is not None, a.mirror_min or 0,
                                _refill)  # fmt: skip
    if failed:
        _corrupt(*jobs[failed - 1])


def _start(vector: ModuleType, coded: TrellisCoded, out: CodeArray) -> _Slot:
    lanes = np.empty(vector.FIELDS * LANES, dtype=np.uint64)
    params = np.empty(vector.PARAMS, dtype=np.int64)
    vector.start_chunk(coded.words, coded.starts, coded.classes, coded.transitions,
                       coded.quantizers, coded.precision, coded.mirror_min is not None,
                       coded.mirror_min or 0, out.size, lanes, params)  # fmt: skip
    return _Slot(coded, out, lanes, params)


def _finish(s: _Slot) -> None:
    c = s.coded
    ok = _kernels().decode_rest(c.words, c.precision, c.classes, c.transitions, c.quantizers,
                                c.table, s.out, s.lanes, s.pos, s.base)  # fmt: skip
    _done(c, s.out, ok, s.lanes, s.base)


def _done(c: TrellisCoded, out: CodeArray, ok: bool, lanes: npt.NDArray[np.uint64] | None,
          step: int) -> None:  # fmt: skip
    """Check a decoded chunk and turn a mirrored stream's codes back from each lane's code
    ``step`` on (the vector loop turned those before, and says in ``lanes`` where each
    lane's sign stands)."""
    if not ok:
        _corrupt(c, out)
    if c.mirror_min is None:
        return
    if lanes is None:
        _kernels().mirror(out, c.mirror_min, True, out)
    else:
        _kernels().mirror_from(out, c.mirror_min, step, lanes)


def _corrupt(c: TrellisCoded, out: CodeArray) -> NoReturn:
    raise InvalidPackageError(
        f"entropy stream chunk {c.index} is corrupt: its words do not decode to "
        f"{out.size} symbols"
    )


def compile_vector_kernels() -> None:
    """Compile (or load) the vector loop for 1 to ``GROUP`` chunks of 8- and 16-bit codes
    and its chunks' start, where it is used; no rounds are run."""
    vector = vector_kernels()
    if vector is None:
        return
    words = np.zeros(2 * LANES, dtype=np.uint32)
    words.flags.writeable = False
    table = np.zeros((2, 2), dtype=np.uint64)
    nexts = np.zeros(2 * STATES, dtype=np.int32)
    # Each chunk's start, as ``_run`` takes it (its streams' words and first states are
    # read-only views of their bytes).
    starts = np.zeros(LANES, dtype=np.uint8)
    starts.flags.writeable = False
    transitions, quantizers = _kernels().EIGHT_STATES
    vector.start_chunk(words, starts, np.zeros(1, np.int64), transitions, quantizers, 8, False,
                       0, 0, np.empty(vector.FIELDS * LANES, np.uint64),
                       np.empty(vector.PARAMS, np.int64))  # fmt: skip
    for dtype in (np.uint8, np.uint16):
        out = np.zeros(0, dtype=dtype)
        for k in range(1, vector.GROUP + 1):
            lanes = np.zeros(k * vector.FIELDS * LANES, dtype=np.uint64)
            counts = np.zeros(k, dtype=np.int64)
            params = np.ones(vector.PARAMS * k, dtype=np.int64)
            vector.rounds((words,) * k, (table,) * k, (nexts,) * k, (out,) * k, lanes, counts,
                          counts.copy(), params, 0, _refill)  # fmt: skip
