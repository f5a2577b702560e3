"""Restoring a layout-3 package: ``model.onnx`` rebuilt in place, without protobuf.

The skeleton is ``model.onnx`` with each code tensor's ``raw_data`` cut out, and each tensor's
entry says where its bytes go (``at``, ``raw_length``). ``check`` bounds every size the header
declares against the package's length and against each other before anything is allocated;
the caller then gives an output of ``size`` bytes (memory, or a shared mapping of the output
file, ``qpack.unpack_file``'s) and ``fill`` decodes every chunk of every tensor on a pool of
threads, ``BATCH_CHUNKS`` chunks a task (decoded together by ``rans_batch``; 4-bit tensors
straight into their nibbles, two codes a byte), into its place in memory, or into the
thread's scratch buffer and then the file with ``pwrite``; it copies the skeleton into the
gaps, and hashes each 16 MiB piece (read back through the mapping) as soon as all its bytes
are there, so that hashing overlaps decoding (XXH3-128 from version 4, SHA-256 in version 3:
``qpack_common.PIECE_HASHES``). Any piece whose hash differs, or any check that fails, raises
``InvalidPackageError``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import zstandard

from quantcore.coding import rans, rans_batch
from quantcore.coding.entropy import decode_plan
from quantcore.coding.packing import unpack_bits
from quantcore.coding.parallel import ThreadBuffer, cores
from quantcore.errors import InvalidPackageError
from quantcore.formats.containers import code_raw_data
from quantcore.formats.qpack_common import (
    FOUR_BIT,
    PIECE_HASHES,
    code_count,
    header_int,
    narrow_codes,
    output_bound,
    raw_length,
    section,
)

UNPACK_THREADS = cores()
_BYTE_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.UINT8})


@dataclass(frozen=True)
class Placed:
    """A code tensor's entry, checked: its section, codes and where they go."""

    entry: dict[str, Any]
    body: memoryview
    count: int
    elem_type: int
    code_min: int
    at: int
    length: int


@dataclass(frozen=True)
class Layout:
    size: int  # bytes of model.onnx
    skeleton: memoryview  # its zstd frame
    tensors: list[Placed]  # in the order of ``at``
    piece_bytes: int
    digests: list[str]
    hash_hex: Callable[[Any], str]  # the hex digest of a piece, as the digests were made


def check(view: memoryview, header: dict[str, Any]) -> Layout:
    """The checked layout of a version-3 package whose skeleton is cut bytes."""
    try:
        return _check(view, header)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidPackageError(f"package header is corrupt: {exc!r}") from None


def _check(view: memoryview, header: dict[str, Any]) -> Layout:
    bound = output_bound(len(view))
    info = header["onnx"]
    size = header_int(info, "size", bound, "onnx")
    skeleton = header["skeleton"]
    raw_size = header_int(skeleton, "raw_size", size, "skeleton")
    frame = section(view, 0, skeleton, "the skeleton")
    placed = []
    for entry in header["tensors"]:
        what = f"codes of {entry['name']!r}"
        count = code_count(entry, bound)
        elem_type = int(entry["elem_type"])
        length = raw_length(count, elem_type)
        if entry["coding"] not in ("entropy", "packed") or entry["raw_length"] != length:
            raise InvalidPackageError(f"package header is corrupt: {what} do not fit the model")
        at = header_int(entry, "at", size - length, what)
        body = section(view, 0, entry, what)
        placed.append(Placed(entry, body, count, elem_type, int(entry["code_min"]), at, length))
    placed.sort(key=lambda p: p.at)
    end = 0
    for p in placed:
        if p.at < end:
            raise InvalidPackageError("package header is corrupt: code tensors overlap")
        end = p.at + p.length
    if raw_size + sum(p.length for p in placed) != size:
        raise InvalidPackageError(
            f"package header is corrupt: skeleton {raw_size} and codes do not make {size} bytes"
        )
    piece = header_int(info, "piece_bytes", 1 << 40, "onnx")
    field, hash_hex = PIECE_HASHES[header["version"]]
    digests = info[field]
    if piece == 0 or not isinstance(digests, list) or len(digests) != -(-size // piece):
        raise InvalidPackageError("package header is corrupt: the model's piece hashes")
    return Layout(size, frame, placed, piece, [str(d) for d in digests], hash_hex)


class _Pieces:
    """Counts the bytes still missing from each piece; hashes a piece once it is whole."""

    def __init__(self, out: np.ndarray, layout: Layout, submit: Callable[..., None]) -> None:
        self.out, self.piece, self.digests = out, layout.piece_bytes, layout.digests
        self.hash_hex = layout.hash_hex
        self.missing = [min(self.piece, layout.size - s) for s in range(0, layout.size,
                                                                      self.piece)]  # fmt: skip
        self.lock = threading.Lock()
        self.submit = submit

    def done(self, begin: int, end: int) -> None:
        whole = []
        with self.lock:
            for k in range(begin // self.piece, -(-end // self.piece)):
                overlap = min(end, (k + 1) * self.piece) - max(begin, k * self.piece)
                self.missing[k] -= overlap
                if overlap and self.missing[k] == 0:
                    whole.append(k)
        for k in whole:
            self.submit(self.hash, k)

    def hash(self, k: int) -> None:
        piece = self.out[k * self.piece : (k + 1) * self.piece]
        if self.hash_hex(piece.data) != self.digests[k]:
            raise InvalidPackageError(
                f"restored model's bytes [{k * self.piece}, {k * self.piece + piece.size}) "
                "differ from the package's hash (corrupt package)"
            )


class _Pool:
    """A thread pool whose tasks may submit more; ``wait`` raises the first failure."""

    def __init__(self, threads: int) -> None:
        self.executor = ThreadPoolExecutor(max(1, threads), thread_name_prefix="unpack")
        self.futures: list[Future[None]] = []
        self.lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self.lock:
            self.futures.append(self.executor.submit(fn, *args))

    def wait(self) -> None:
        try:
            seen = 0
            while True:
                with self.lock:
                    batch = self.futures[seen:]
                if not batch:
                    break
                for future in batch:
                    future.exception()  # waits
                seen += len(batch)
            for future in self.futures:
                if future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
        finally:
            for future in self.futures:
                future.cancel()
            self.executor.shutdown(wait=True)


def fill(
    view: memoryview,
    layout: Layout,
    out: np.ndarray,
    threads: int | None = None,
    fd: int | None = None,
) -> None:
    """Restore model.onnx into ``out`` (``layout.size`` uint8: memory, or a mapping of the
    file ``fd``), checking every piece's hash."""
    pool = _Pool(UNPACK_THREADS if threads is None else threads)
    pieces = _Pieces(out, layout, pool.submit)
    batch: list[_Job] = []
    try:
        for placed in layout.tensors:
            _submit_tensor(placed, out, pool, pieces, batch, fd)
        if batch:
            pool.submit(_batch_task, batch, pieces, fd)
        _copy_skeleton(layout, out, pieces)
    finally:
        pool.wait()


# Chunks decoded by one task: the vector decoder advances several at once (rans_batch).
BATCH_CHUNKS = 8
_Job = tuple[rans.Chunk, Placed, np.ndarray, bool]


def _submit_tensor(
    p: Placed, out: np.ndarray, pool: _Pool, pieces: _Pieces, batch: list[_Job],
    fd: int | None,
) -> None:
    """Check a tensor's stream (on this thread) and add its chunks to ``batch``, submitted as
    a task whenever it holds ``BATCH_CHUNKS``."""
    region = out[p.at : p.at + p.length]
    if p.entry["coding"] == "packed":
        bits = header_int(p.entry, "bits", 16, "tensor")
        if bits == 0:
            raise InvalidPackageError(f"package header is corrupt: {p.entry['name']!r} bits=0")

        def whole() -> None:
            _store(unpack_bits(p.body, bits, p.count), p, region)
            pieces.done(p.at, p.at + p.length)

        pool.submit(whole)
        return
    # The restored bytes are checked against the piece hashes, which cover these codes: the
    # stream's own CRC would read its words a second time (a tenth of the unpack's CPU).
    dtype, chunks = decode_plan(p.body, count=p.count, check_crc=False)
    direct = p.elem_type in _BYTE_TYPES and dtype == np.uint8
    nibbles = p.elem_type in FOUR_BIT and dtype == np.uint8
    if not (direct or nibbles) or any(c.start % 2 for c in chunks):
        # Rare layouts (16-bit or wider codes): decoded whole, then stored.
        def decoded() -> None:
            codes = np.empty(p.count, dtype=dtype)
            for c in chunks:
                c.fill(codes[c.start : c.start + c.size])
            _store(codes, p, region)
            pieces.done(p.at, p.at + p.length)

        pool.submit(decoded)
        return
    if p.count == 0:
        pieces.done(p.at, p.at + p.length)
    for chunk in chunks:
        batch.append((chunk, p, region, nibbles))
        if len(batch) == BATCH_CHUNKS:
            pool.submit(_batch_task, batch.copy(), pieces, fd)
            batch.clear()


def _batch_task(jobs: list[_Job], pieces: _Pieces, fd: int | None) -> None:
    """Decode the chunks (4-bit ones straight into nibbles), then report each stored.

    With the output file's ``fd``, the chunks are decoded into this thread's scratch buffer
    and written with ``pwrite``: decoded in place, eight chunks at once from two threads, each
    page of the file's mapping took a read fault (its unwritten extent zeroed, with readahead
    ahead of it) then a write notification: about 40% of an 8-bit unpack's CPU time."""
    spans = [_span(chunk, packed) for chunk, _, _, packed in jobs]
    scratch = _scratch(sum(end - begin for begin, end in spans)) if fd is not None else None
    codes, nibbles, stored = [], [], []
    used = 0
    for (chunk, p, region, packed), (begin, end) in zip(jobs, spans, strict=True):
        if scratch is None:
            target = region[begin:end]
        else:
            target = scratch[used : used + end - begin]
            used += end - begin
        if packed:
            nibbles.append((chunk, target, p.code_min))
        else:
            codes.append((chunk, target))
        stored.append((p, target, begin, end, packed))
    rans_batch.fill_chunks(codes)
    rans_batch.fill_nibbles(nibbles)
    for p, target, begin, end, packed in stored:
        if not packed and p.code_min & 0xFF:
            np.add(target, np.uint8(p.code_min & 0xFF), out=target)  # wraps, as it must
        if fd is not None:
            _write_at(fd, target, p.at + begin)
        pieces.done(p.at + begin, p.at + end)


def _span(chunk: rans.Chunk, packed: bool) -> tuple[int, int]:
    """The bytes of its tensor that ``chunk`` fills: two codes a byte when ``packed``."""
    if packed:
        return chunk.start // 2, (chunk.start + chunk.size + 1) // 2
    return chunk.start, chunk.start + chunk.size


# This thread's decoded chunks on their way to the file (not ``rans_batch``'s own buffer,
# which the scalar nibble decoder fills while writing into this one).
_scratch = ThreadBuffer().get


def _write_at(fd: int, data: np.ndarray, offset: int) -> None:
    view = data.data
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(f"could not write the restored model at byte {offset}")
        view, offset = view[written:], offset + written


def _store(shifted: np.ndarray, p: Placed, region: np.ndarray) -> None:
    if shifted.size != p.count:
        raise InvalidPackageError(f"package codes of {p.entry['name']!r} do not fit the model")
    raw = code_raw_data(narrow_codes(shifted, p.code_min, p.elem_type), p.elem_type)
    region[:] = np.frombuffer(raw, dtype=np.uint8)


def _copy_skeleton(layout: Layout, out: np.ndarray, pieces: _Pieces) -> None:
    """Decompress the skeleton straight into the gaps between the code tensors."""
    gaps, previous = [], 0
    for p in layout.tensors:
        gaps.append((previous, p.at))
        previous = p.at + p.length
    gaps.append((previous, layout.size))
    try:
        with zstandard.ZstdDecompressor().stream_reader(layout.skeleton) as reader:
            for begin, end in gaps:
                target = out[begin:end].data
                got = 0
                while got < end - begin:
                    n = reader.readinto(target[got:])
                    if n == 0:
                        raise InvalidPackageError("package skeleton is truncated")
                    got += n
                pieces.done(begin, end)
            if reader.read(1):
                raise InvalidPackageError("package skeleton is longer than its header says")
    except zstandard.ZstdError as exc:
        raise InvalidPackageError(f"package skeleton is corrupt: {exc}") from None
