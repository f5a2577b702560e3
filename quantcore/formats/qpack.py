"""``model.qpack``: the compact package of a quantized model, and its exact inverse.

A package holds the final ``model.onnx`` in two parts: the *skeleton* (every byte of
``model.onnx`` but the ``raw_data`` of its code tensors: graph, scales, offsets, codebooks and
the tensors left in float), compressed with zstd; and each code tensor's integer codes,
shifted to start at zero and entropy-coded (``quantcore.coding.entropy``) or, with
``entropy_coding=false``, bit-packed at their code width (``quantcore.coding.packing``).
Unpacking decodes each tensor straight into its place in ``model.onnx`` (4-bit types two per
byte, low nibble first, as ONNX stores them) and checks the hash of every 16 MiB piece.

Layout 3, version 4 (written; integers little-endian; ``docs/qpack.md`` has the details;
version 3 is the same with SHA-256 piece hashes, ``piece_sha256``, and is still read)::

    prefix (16 bytes, struct "<8sHHI"): magic b"QPACK\\r\\n\\x1a", version (4), flags (0), 0
    sections: each tensor's codes, appended as they come, then the skeleton (zstd)
    header: UTF-8 JSON object
        format:    "onnx" | "safetensors" | "npz"   (what unpacking writes)
        onnx:      {size, external_data, piece_bytes, piece_xxh3_128: [...]}
        skeleton:  {offset, length, raw_size, codec: "zstd", kind: "cut" | "proto"}
        tensors:   [{name, initializer, elem_type, shape, code_min, code_max,
                     coding: "entropy" | "packed", bits, offset, length, at, raw_length}]
    trailer (16 bytes, struct "<QI4s"): header offset, header length, b"QIDX"

Section offsets count from the package's first byte; ``at`` is where the tensor's
``raw_data`` bytes are in ``model.onnx``. The header goes last so that a writer can stream
the tensors' sections (``qpack_writer.PackageWriter``).

A model.onnx past 2 GB is written with external data (``model.onnx`` + ``model.onnx.data``):
its skeleton is the ``ModelProto`` with the codes' ``raw_data`` emptied (``kind: "proto"``, as
in layouts 1 and 2, which are still read: ``qpack_proto``) and ``unpack_file`` rewrites both
files with the same writer. The skeleton's zstd frame carries a checksum and every entropy
stream a CRC-32, so corruption is still detected.

For weights-only inputs the ONNX model is the container graph of
``quantcore.formats.container``; unpacking runs it and writes the weights file.

Errors: a truncated or corrupt package, an unknown magic or version, or a restored model
whose hash differs all raise ``InvalidPackageError`` with what is wrong. Every size a header
declares is bounded by the package's length (``qpack_common.output_bound``) before anything
is allocated.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import mmap
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantcore.coding.entropy import decode_codes, encode_codes
from quantcore.coding.packing import pack_bits
from quantcore.errors import InvalidPackageError
from quantcore.formats import qpack_restore
from quantcore.formats.container import container_arrays, container_metadata
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_writer import (
    CodedTensor,
    WrittenModel,
    save_onnx,
    serialize,
    serialize_inline,
)
from quantcore.formats.qpack_common import (
    MAGIC,
    VERSION,
    VERSIONS,
    code_bits,
    narrow_codes,
    package_format,
    read_header,
    shifted_codes,
)
from quantcore.formats.qpack_proto import restore_proto, skeleton, tensor_entry
from quantcore.formats.qpack_writer import PackageWriter
from quantcore.formats.weights_io import write_npz, write_safetensors

log = logging.getLogger(__name__)

__all__ = [
    "MAGIC",
    "VERSION",
    "VERSIONS",
    "Package",
    "PackageWriter",
    "code_bits",
    "encode_body",
    "pack",
    "package_format",
    "read_header",
    "skeleton",
    "tensor_entry",
    "unpack",
    "unpack_file",
    "unpack_model",
]

UNPACK_THREADS = qpack_restore.UNPACK_THREADS  # threads that code or decode at once
_shifted = shifted_codes
_codes = narrow_codes


@dataclass(frozen=True, kw_only=True)
class Package:
    """A package in memory: its bytes, and the sizes of its parts (for reports and sweeps)."""

    data: bytes
    skeleton_bytes: int
    code_bytes: int


def encode_body(
    coded: CodedTensor, entropy_coding: bool, counts: np.ndarray | None = None
) -> bytes:
    """One tensor's codes section: ``code - code_min`` entropy-coded or bit-packed.

    ``counts`` is the codes' bincount by their unsigned bit pattern (``StreamResult.counts``:
    code ``c`` in bin ``c mod len(counts)``), when known; it spares the coder a counting pass.
    """
    shifted = shifted_codes(coded)
    if not entropy_coding:
        return pack_bits(shifted, code_bits(coded))
    if counts is not None:  # bin s of the shifted codes holds code_min + s
        span = int(coded.code_max) - int(coded.code_min)
        counts = np.roll(counts, -int(coded.code_min))[: span + 1]
    body = encode_codes(shifted, counts=counts, code_min=int(coded.code_min))
    if not _restores(body, shifted):
        # A stream its own decoder refuses would make the package unrestorable: version 2,
        # the plainest, takes its place (larger than the stream it replaces, which was
        # chosen as the smallest).
        log.warning("the entropy stream (version %d) of %d codes did not decode to them; "
                    "written as version 2", body[4], shifted.size)
        body = encode_codes(shifted, counts=counts, version=2)
        if not _restores(body, shifted):
            raise RuntimeError(f"entropy stream of {shifted.size} codes does not decode to them")
    return body


def _restores(body: bytes, shifted: np.ndarray) -> bool:
    """Whether ``body`` decodes to ``shifted`` (checked before it is written: decoding costs
    a fraction of the coding)."""
    try:
        return bool(np.array_equal(decode_codes(body, count=shifted.size), shifted.reshape(-1)))
    except InvalidPackageError:
        return False


def pack(
    written: WrittenModel,
    coded: Mapping[str, CodedTensor],
    *,
    fmt: ModelFormat,
    entropy_coding: bool = True,
    onnx_bytes: bytes | None = None,
    bodies: Mapping[str, bytes] | None = None,
) -> Package:
    """Build the package of ``written`` (whose code tensors hold ``coded``'s codes).

    ``onnx_bytes`` is ``serialize(written.proto)`` and ``bodies`` the tensors'
    ``encode_body`` sections, when the caller already has them (else they are coded here,
    tensors on parallel threads).
    """
    if onnx_bytes is None:
        onnx_bytes = serialize_inline(written.proto)
    if bodies is None:
        bodies = _encode_bodies(coded, entropy_coding)
    file = io.BytesIO()
    writer = PackageWriter(file, fmt)
    for name, tensor in coded.items():
        writer.add(name, tensor_entry(name, written, tensor, entropy_coding), bodies[name])
    if onnx_bytes is None:  # past 2 GB: saved with external data, no single byte string
        writer.finish_proto(written)
    else:
        writer.finish(onnx_bytes)
    return Package(data=file.getvalue(), skeleton_bytes=writer.skeleton_bytes,
                   code_bytes=writer.code_bytes)  # fmt: skip


def _encode_bodies(coded: Mapping[str, CodedTensor], entropy_coding: bool) -> dict[str, bytes]:
    """Every tensor's ``encode_body``, ``UNPACK_THREADS`` tensors at a time (the coder
    releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, UNPACK_THREADS)) as pool:
        done = pool.map(lambda tensor: encode_body(tensor, entropy_coding), coded.values())
        return dict(zip(coded, done, strict=True))


def _cut(header: dict[str, Any]) -> bool:
    """Whether the package's skeleton is model.onnx's bytes cut around the codes."""
    return header["version"] >= 3 and header["skeleton"].get("kind") == "cut"


def unpack_model(data: bytes | memoryview) -> tuple[ModelFormat, onnx.ModelProto, str | None]:
    """The package's format, the restored model and the SHA-256 its bytes must have (``None``
    when the package holds piece hashes or a model written with external data)."""
    header, start = read_header(data)
    fmt = ModelFormat(header["format"])
    if _cut(header):
        return fmt, onnx.ModelProto.FromString(unpack(data)[1]), None
    proto = restore_proto(memoryview(data), header, start)
    return fmt, proto, header["onnx"].get("sha256")


def unpack(data: bytes | memoryview) -> tuple[ModelFormat, bytes]:
    """The package's format and the exact bytes of the ``model.onnx`` it was built from
    (checked against the stored hashes)."""
    header, start = read_header(data)
    fmt = ModelFormat(header["format"])
    view = memoryview(data).cast("B")
    if _cut(header):
        layout = qpack_restore.check(view, header)
        out = bytearray(layout.size)
        qpack_restore.fill(view, layout, np.frombuffer(out, dtype=np.uint8), UNPACK_THREADS)
        return fmt, bytes(out)
    proto = restore_proto(view, header, start)
    return fmt, _checked_bytes(proto, header["onnx"].get("sha256"), header["onnx"])


def _checked_bytes(proto: onnx.ModelProto, expected: str | None, info: dict[str, Any]) -> bytes:
    """The serialized ``proto``, whose SHA-256 must be ``expected``."""
    if info.get("external_data"):
        raise InvalidPackageError(
            "this package holds a model over 2 GB (written with external data); restore it "
            "to files with unpack_file"
        )
    model_bytes = serialize(proto)
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != expected:
        raise InvalidPackageError(
            f"restored model's sha256 {digest} differs from the package's {expected} "
            "(corrupt package)"
        )
    return model_bytes


def unpack_file(package: Path, out: Path) -> tuple[Path, ...]:
    """Restore ``package`` into ``out``: ``model.onnx`` itself, or for a weights-only package the
    ``.safetensors``/``.npz`` file with the dequantized weights; a model over 2 GB as ``out``
    and ``out.data`` (external data), as the job wrote it. Returns the files written."""
    try:
        with package.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    except OSError as exc:
        raise InvalidPackageError(f"cannot read {package.name}: {exc.strerror}") from None
    try:
        return _unpack_view(memoryview(mapped if mapped is not None else b""), out)
    finally:
        _close(mapped)


def _close(mapped: mmap.mmap | None) -> None:
    """Unmap, unless an error's traceback still holds a view of it (then the mapping goes
    when that is collected)."""
    if mapped is not None:
        with contextlib.suppress(BufferError):
            mapped.close()


def _unpack_view(view: memoryview, out: Path) -> tuple[Path, ...]:
    header, start = read_header(view)
    fmt = ModelFormat(header["format"])
    if fmt is ModelFormat.ONNX and _cut(header):
        _restore_to_file(view, header, out)
        return (out,)
    if fmt is ModelFormat.ONNX and header["onnx"].get("external_data"):
        return save_onnx(restore_proto(view, header, start), out)  # same writer, same files
    model_bytes = unpack(view)[1]
    if fmt is ModelFormat.ONNX:
        out.write_bytes(model_bytes)
    elif fmt is ModelFormat.SAFETENSORS:
        write_safetensors(out, container_arrays(model_bytes), container_metadata(model_bytes))
    else:
        write_npz(out, container_arrays(model_bytes))
    return (out,)


def _restore_to_file(view: memoryview, header: dict[str, Any], out: Path) -> None:
    """model.onnx decoded into a file beside ``out`` (its code tensors written by pwrite, the
    rest through a shared mapping of it, which the piece hashes read back), renamed to ``out``
    once every piece's hash has matched (so a corrupt package leaves no file). Where the file
    cannot be mapped, it is decoded in memory and written (a model of this layout is under
    2 GB)."""
    layout = qpack_restore.check(view, header)
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("w+b") as file:
            mapped = _file_mapping(file.fileno(), layout.size)
            if mapped is None:
                buffer = bytearray(layout.size)
                qpack_restore.fill(view, layout, np.frombuffer(buffer, np.uint8), UNPACK_THREADS)
                file.write(buffer)
            else:
                try:
                    target = np.frombuffer(mapped, dtype=np.uint8)
                    qpack_restore.fill(view, layout, target, UNPACK_THREADS,
                                       fd=file.fileno())
                    del target
                finally:
                    _close(mapped)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


_DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def _file_mapping(fd: int, size: int) -> mmap.mmap | None:
    """A writable shared mapping of the file ``fd``, its ``size`` bytes allocated on disk
    first: a full disk is an OSError here, where a page fault of the mapping would kill the
    process (SIGBUS). None where the file system allocates or maps no such file (or for an
    empty model)."""
    if size == 0:
        return None
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise OSError(exc.errno, f"cannot allocate its {size} bytes on disk: "
                          f"{exc.strerror}") from None  # fmt: skip
        return None  # not supported here: written, not mapped
    try:
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
    except OSError:
        return None
    # The code tensors are written with pwrite (qpack_restore), the mapping only read back for
    # the piece hashes: readahead would zero pages beyond what is written, to be overwritten.
    with contextlib.suppress(OSError, AttributeError):
        mapped.madvise(mmap.MADV_RANDOM)
    return mapped
