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
the mode and it is at most ``SLACK_SHARE`` larger than the smallest other stream: its bytes
are those of v4 within a few percent either way (a gap's flags cost what v4's zero flags
between two non-mode codes cost), and it decodes many times faster.

Layout (integers little-endian; varints are LEB128)::

    magic b"QENT", version 14 (1 byte), flags (1 byte: bit 0 the codes are 16-bit wide),
    count (varint), mode (varint), number of codes other than the mode (varint, at least 1),
    CRC-32 of the bytes before it and of the payload (4 bytes),
    payload: the range coder's bytes, trailing zeros trimmed
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import numpy.typing as npt

from quantcore.coding import rans
from quantcore.coding.adaptive import WIDE, _varint, open_sealed, seal
from quantcore.coding.symbols import MAGIC, CodeArray
from quantcore.errors import InvalidPackageError

VERSION = 14
MAX_SHARE = 1 / 16  # of codes other than the mode, past which v2-v13 decode as fast
SLACK_SHARE = 0.01  # of the smallest other stream's bytes, that v14 may add
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


def most_bytes(other_bytes: int) -> int:
    """The most bytes a v14 stream may take in place of one of ``other_bytes``."""
    return math.floor(other_bytes * (1 + SLACK_SHARE))


def accept(sparse_bytes: int, other_bytes: int) -> bool:
    """Whether v14's ``sparse_bytes`` may replace a stream of ``other_bytes``."""
    return sparse_bytes <= most_bytes(other_bytes)


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


def plan(view: memoryview) -> tuple[np.dtype, list[rans.Chunk]]:
    """The dtype and the one chunk of a v14 stream, after checking its header and CRC."""
    if len(view) < 6 + 3 + 4 or view[5] & ~WIDE:
        raise InvalidPackageError("entropy stream v14 header is truncated or corrupt")
    (count, mode, others), payload = open_sealed(view, 3)
    width = 16 if view[5] & WIDE else 8
    dtype = np.dtype(np.uint16 if view[5] & WIDE else np.uint8)
    if count > MAX_CODES or mode >= 1 << width or not 0 < others <= count:
        raise InvalidPackageError(f"entropy stream v14 has {count=}, {mode=}, {others=}")
    data = np.frombuffer(payload, dtype=np.uint8)

    def fill(part: CodeArray) -> None:
        if not kernels().decode(data, mode, (1 << width) - 1, others, part):
            raise InvalidPackageError(
                f"entropy stream v14 is corrupt: its payload does not decode to {others} codes "
                f"within {count}"
            )

    return dtype, [rans.Chunk(0, count, fill)]


def compile_kernels() -> None:
    """Compile (or load) the v14 kernels for 8- and 16-bit codes."""
    for dtype in (np.uint8, np.uint16):
        codes: CodeArray = np.array([0] * 30 + [1, 200, 0, 3], dtype=dtype)
        stream = encode(codes, np.bincount(codes))
        assert stream is not None
        _, chunks = plan(memoryview(stream))
        for c in chunks:
            c.fill(np.empty(c.size, dtype=dtype))
