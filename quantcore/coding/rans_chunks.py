"""The pieces of a QENT v2 stream's chunk that both of its decoders read: the chunk's words,
its first states and what the vector decoder needs of it; and what a trellis stream's chunk
holds for ``quantcore.coding.trellis_batch``.

``quantcore.coding.rans`` (the stream, the scalar kernels) and ``quantcore.coding.rans_batch``
(the vector decoder, several chunks at once) both import them from here, so that neither
imports the other at module level in both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcore.coding.symbols import CodeArray
from quantcore.errors import InvalidPackageError

LANES = 8  # rans_kernels.LANES, here so that the layout is known without compiling
# The most states a trellis machine may have: a stream's ``nexts`` holds ``STATES`` entries a
# parity (``trellis_batch.next_states``), which the vector loop reads (``trellis_simd``).
STATES = 32
LOW = 1 << 31  # the states' lower bound, rans_kernels.LOW


@dataclass(frozen=True)
class Coded:
    """What the vector decoder (``quantcore.coding.rans_batch``) needs of a v2 chunk: its
    words and low bits, the stream's table (``f | (slot - c) << 16 | value << 32`` for each
    slot), precision and raw bits, and the chunk's index (for errors)."""

    words: memoryview
    low: memoryview
    table: npt.NDArray[np.uint64]
    precision: int
    raw_bits: int
    index: int


@dataclass(frozen=True)
class TrellisCoded:
    """What decoding a trellis chunk needs: its words, its lanes' first trellis states, the
    stream's decoder table (``trellis_plan.decoder_tables``), precision, magnitude classes
    (``context.class_table``) and machine (``nexts``: ``trellis_batch.next_states``), the
    ``code_min`` of a mirrored stream (else None) and the chunk's index (for errors)."""

    words: npt.NDArray[np.uint32]
    starts: npt.NDArray[np.uint8]
    table: npt.NDArray[np.uint64]
    precision: int
    classes: npt.NDArray[np.int64]
    transitions: npt.NDArray[np.int64]
    quantizers: npt.NDArray[np.int64]
    nexts: npt.NDArray[np.int32]
    mirror_min: int | None
    index: int


@dataclass(frozen=True)
class Chunk:
    """A part of a stream decodable on its own: codes ``[start, start + size)``, written by
    ``fill`` into an array of ``size`` codes of the stream's dtype; ``coded`` where
    ``rans_batch.fill_chunks`` may decode it with others (``trellis`` for a chunk of a
    trellis stream)."""

    start: int
    size: int
    fill: Callable[[CodeArray], None]
    coded: Coded | None = None
    trellis: TrellisCoded | None = None


def _words(data: memoryview) -> npt.NDArray[np.uint32]:
    """The words of a chunk as an aligned read-only array (copied only if the stream's bytes
    are not aligned)."""
    words = np.frombuffer(data, dtype="<u4")
    if not words.flags.aligned:
        words = words.copy()
    words.flags.writeable = False  # one kernel signature, whatever the caller's buffer
    return words


def first_states(words: npt.NDArray[np.uint32], index: int) -> npt.NDArray[np.uint64]:
    """A chunk's 8 states (its first 16 words), checked to lie in ``[L, L * 2**32)``."""
    states = words[: 2 * LANES].astype(np.uint64)
    states = states[0::2] | states[1::2] << np.uint64(32)
    if not ((states >= LOW) & (states < LOW << 32)).all():
        raise InvalidPackageError(f"entropy stream chunk {index} is corrupt: bad states")
    return states
