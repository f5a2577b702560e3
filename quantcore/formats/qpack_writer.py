"""Writing a layout-3 package tensor by tensor: each tensor's codes section is appended as it
comes, and what depends on the whole model (the skeleton, the header) goes at the end.

    writer = PackageWriter(file, ModelFormat.ONNX)       # writes the 16-byte prefix
    writer.add(name, entry, body)                         # any number, in any order
    writer.describe(name, entry)                          # optional: the entry, given later
    writer.finish(model_onnx_bytes)                       # skeleton, header, trailer

``finish`` takes ``model.onnx``'s bytes (``bytes``, a ``memoryview`` or an ``mmap`` of the
file written alongside): it finds each code tensor's ``raw_data`` in them
(``onnx_wire.raw_data_regions``, or the caller's ``regions`` when it knows them), cuts them
out to make the skeleton and hashes the model in pieces. ``finish_proto`` is the same for a
model past 2 GB (written with external data): its skeleton is the emptied ``ModelProto``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import zstandard

from quantcore.coding.parallel import run_all
from quantcore.errors import InvalidModelError
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_wire import raw_data_regions
from quantcore.formats.onnx_writer import WrittenModel
from quantcore.formats.qpack_common import (
    MAGIC,
    PIECE_HASHES,
    PREFIX,
    TRAILER,
    TRAILER_MAGIC,
    VERSION,
    code_count,
    output_bound,
    raw_length,
)
from quantcore.formats.qpack_proto import ZSTD_LEVEL, skeleton

PIECE_BYTES = 1 << 24  # model.onnx is hashed in pieces of 16 MiB, checked in parallel


def piece_digests(
    model: bytes | memoryview, piece: int, done: Callable[[int, int], None] | None = None
) -> list[str]:
    """The hash (``PIECE_HASHES[VERSION]``) of each ``piece`` bytes of ``model`` (the last may
    be shorter), computed on the coder's threads; ``done(start, length)`` is called as each
    piece is hashed."""
    view = memoryview(model).cast("B")
    hash_hex = PIECE_HASHES[VERSION][1]

    def digest(start: int) -> str:
        chunk = view[start : start + piece]
        text = hash_hex(chunk)
        if done is not None:
            done(start, len(chunk))
        return text

    return run_all(digest, range(0, len(view), piece))


class PackageWriter:
    """A layout-3 package being written to ``file`` (at its current position, which the
    sections' offsets count from); see the module docstring."""

    def __init__(self, file: BinaryIO, fmt: ModelFormat) -> None:
        self._file = file
        self._format = fmt
        self._entries: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}
        self._file.write(PREFIX.pack(MAGIC, VERSION, 0, 0))
        self._at = PREFIX.size
        self.code_bytes = 0
        self.skeleton_bytes = 0

    def add(self, name: str, entry: Mapping[str, Any], body: bytes | memoryview) -> None:
        """Append one tensor's codes section. ``entry``: its header fields (``initializer``,
        ``elem_type``, ``shape``, ``code_min``, ``code_max``, ``coding``, ``bits``: what
        ``qpack_proto.tensor_entry`` gives)."""
        self._index[name] = len(self._entries)
        self._entries.append({**entry, "name": name, "offset": self._at, "length": len(body)})
        self._write(body)
        self.code_bytes += len(body)

    def describe(self, name: str, entry: Mapping[str, Any]) -> None:
        """Set the header fields of the tensor ``add`` appended as ``name``, for a writer that
        appends each section as soon as it is coded, before the written model that gives the
        tensor's initializer and type exists; the header is then what ``add`` with the whole
        ``entry`` would have made."""
        old = self._entries[self._index[name]]
        self._entries[self._index[name]] = {
            **entry, "name": name, "offset": old["offset"], "length": old["length"]
        }

    def finish(
        self,
        model: bytes | memoryview,
        regions: Mapping[str, tuple[int, int]] | None = None,
        hashed: Callable[[int, int], None] | None = None,
    ) -> int:
        """Write the skeleton cut from ``model`` (model.onnx's bytes), the header and the
        trailer; returns the package's size. ``regions``: each code initializer's ``raw_data``
        as ``(offset, length)`` in ``model``, when the caller knows them. ``hashed(start,
        length)`` is called once each piece of ``model`` is hashed (a caller that mapped the
        file drops those pages: the skeleton reads only the bytes around the codes again)."""
        view = memoryview(model).cast("B")
        names = [e["initializer"] for e in self._entries]
        found = dict(regions) if regions is not None else raw_data_regions(view, names)
        cuts = []
        for entry in self._entries:
            at, length = found[entry["initializer"]]
            expected = raw_length(code_count(entry, output_bound(len(view))), entry["elem_type"])
            if length != expected:
                raise InvalidModelError(
                    f"raw_data of {entry['initializer']!r} is {length} bytes, its codes "
                    f"make {expected}"
                )
            entry["at"], entry["raw_length"] = at, length
            cuts.append((at, length))
        cuts.sort()
        kept, previous = [], 0
        for at, length in cuts:
            if at < previous:
                raise InvalidModelError("code tensors' raw_data overlap in model.onnx")
            kept.append(view[previous:at])
            previous = at + length
        kept.append(view[previous:])
        onnx_info = {
            "size": len(view),
            "external_data": False,
            "piece_bytes": PIECE_BYTES,
            PIECE_HASHES[VERSION][0]: piece_digests(view, PIECE_BYTES, hashed),
        }
        return self._close(kept, onnx_info, "cut")

    def finish_proto(self, written: WrittenModel) -> int:
        """``finish`` for a model past 2 GB: the skeleton is the emptied ``ModelProto``."""
        onnx_info = {"size": None, "external_data": True}
        return self._close([memoryview(skeleton(written))], onnx_info, "proto")

    def _close(self, kept: list[memoryview], onnx_info: dict[str, Any], kind: str) -> int:
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
        raw_size = sum(len(piece) for piece in kept)
        chunker = compressor.chunker(size=raw_size, chunk_size=1 << 20)
        offset = self._at
        for piece in kept:
            for out in chunker.compress(piece):
                self._write(out)
        for out in chunker.finish():
            self._write(out)
        self.skeleton_bytes = self._at - offset
        header = {
            "format": self._format.value,
            "onnx": onnx_info,
            "skeleton": {
                "offset": offset,
                "length": self.skeleton_bytes,
                "raw_size": raw_size,
                "codec": "zstd",
                "kind": kind,
            },
            "tensors": self._entries,
        }
        # Compressed: one entry per tensor repeats the same keys, and on a small model the
        # plain JSON is kilobytes of the package (zstd takes 11.8 kB to about 1 kB).
        text = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(
            json.dumps(header, separators=(",", ":")).encode()
        )
        header_at = self._at
        self._write(text)
        self._write(TRAILER.pack(header_at, len(text), TRAILER_MAGIC))
        return self._at

    def _write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._at += len(data)
