"""``model.qpack``: the compact package of a quantized model, and its exact inverse.

A package holds the final ``model.onnx`` in two parts: the *skeleton* (the whole ModelProto
with the ``raw_data`` of every code tensor emptied: graph, scales, offsets, codebooks and the
tensors left in float), compressed with zstd; and each code tensor's integer codes, shifted
to start at zero and entropy-coded (``quantcore.coding.entropy``) or, with
``entropy_coding=false``, bit-packed at their code width (``quantcore.coding.packing``). Unpacking
refills each code tensor's ``raw_data`` (4-bit types two per byte, low nibble first, as ONNX
stores them) and serializes: the result is ``model.onnx`` byte for byte, which is checked
against the SHA-256 stored in the header.

Layout, version 2 (integers little-endian; version 1, still read, is the same but for its
entropy streams, all ``QENT`` v1)::

    prefix (16 bytes, struct "<8sHHI"): magic b"QPACK\\r\\n\\x1a", version (2), flags (0),
                                        length of the header in bytes
    header: UTF-8 JSON object
        format:    "onnx" | "safetensors" | "npz"   (what unpacking writes)
        onnx:      {sha256, size, external_data}     (of the model.onnx the package restores;
                                                      null past 2 GB, see below)
        skeleton:  {offset, length, raw_size, codec: "zstd"}
        tensors:   [{name, initializer, elem_type, shape, code_min, code_max,
                     coding: "entropy" | "packed", bits, offset, length}]
    sections: the skeleton and each tensor's codes, at ``offset`` bytes after the header

A model.onnx past 2 GB is written with external data (``model.onnx`` + ``model.onnx.data``);
its package stores no SHA-256 (there is no single byte string) and ``unpack_file`` rewrites
both files with the same writer. The skeleton's zstd frame carries a checksum and every
entropy stream a CRC-32, so corruption is still detected.

For weights-only inputs the ONNX model is the container graph of
``quantcore.formats.container``; unpacking runs it and writes the weights file.

Unpacking decodes the tensors on a few threads (``UNPACK_THREADS``, the cores), each
stream's chunks on the coder's own threads; the protobuf message is filled on the calling
thread, in the header's order.

Errors: a truncated or corrupt package, an unknown magic or version, or a restored model
whose SHA-256 differs all raise ``InvalidPackageError`` with what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import zstandard

from quantcore.coding.entropy import decode_codes, encode_codes
from quantcore.coding.packing import pack_bits, unpack_bits
from quantcore.coding.parallel import cores
from quantcore.errors import InvalidPackageError
from quantcore.formats.container import container_arrays, container_metadata
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_reader import walk_graphs
from quantcore.formats.onnx_writer import (
    CodedTensor,
    WrittenModel,
    code_raw_data,
    save_onnx,
    serialize,
    serialize_inline,
)
from quantcore.formats.weights_io import write_npz, write_safetensors

MAGIC = b"QPACK\r\n\x1a"
VERSION = 2  # written; the entropy streams may be QENT v2
VERSIONS = (1, 2)  # read
UNPACK_THREADS = cores()  # tensors coded or decoded at once
_FOUR_BIT = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4})
_PREFIX = struct.Struct("<8sHHI")
ZSTD_LEVEL = 3


@dataclass(frozen=True, kw_only=True)
class Package:
    """A package in memory: its bytes, and the sizes of its parts (for reports and sweeps)."""

    data: bytes
    skeleton_bytes: int
    code_bytes: int


def _code_tensors(proto: onnx.ModelProto, names: set[str]) -> dict[str, onnx.TensorProto]:
    found = {}
    for graph, _ in walk_graphs(proto.graph, "graph"):
        for init in graph.initializer:
            if init.name in names:
                found[init.name] = init
    return found


def skeleton(written: WrittenModel) -> bytes:
    """The serialized model with the code tensors' ``raw_data`` emptied (the proto is left as
    it was)."""
    tensors = _code_tensors(written.proto, {c.initializer for c in written.codes.values()})
    stash = {name: t.raw_data for name, t in tensors.items()}
    try:
        for tensor in tensors.values():
            tensor.ClearField("raw_data")
        return written.proto.SerializeToString()
    finally:
        for name, tensor in tensors.items():
            tensor.raw_data = stash[name]


def _shifted(coded: CodedTensor) -> np.ndarray:
    span = int(coded.code_max) - int(coded.code_min)
    dtype = np.uint8 if span < 256 else np.uint16
    return (np.asarray(coded.codes) - int(coded.code_min)).astype(dtype)


def code_bits(coded: CodedTensor) -> int:
    return max(1, (int(coded.code_max) - int(coded.code_min)).bit_length())


def encode_body(
    coded: CodedTensor, entropy_coding: bool, counts: np.ndarray | None = None
) -> bytes:
    """One tensor's codes section: ``code - code_min`` entropy-coded or bit-packed.

    ``counts`` is the codes' bincount by their unsigned bit pattern (``StreamResult.counts``:
    code ``c`` in bin ``c mod len(counts)``), when known; it spares the coder a counting pass.
    """
    shifted = _shifted(coded)
    if not entropy_coding:
        return pack_bits(shifted, code_bits(coded))
    if counts is not None:  # bin s of the shifted codes holds code_min + s
        span = int(coded.code_max) - int(coded.code_min)
        counts = np.roll(counts, -int(coded.code_min))[: span + 1]
    return encode_codes(shifted, counts=counts)


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
    # Past 2 GB model.onnx is written with external data and has no single byte string to
    # hash; the sections' own checksums (zstd, entropy CRC) guard the package then.
    onnx_info: dict[str, Any] = {"sha256": None, "size": None, "external_data": True}
    if onnx_bytes is not None:
        onnx_info = {
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "size": len(onnx_bytes),
            "external_data": False,
        }
    raw_skeleton = skeleton(written)
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    sections = [compressor.compress(raw_skeleton)]
    header: dict[str, Any] = {
        "format": fmt.value,
        "onnx": onnx_info,
        "skeleton": {
            "offset": 0,
            "length": len(sections[0]),
            "raw_size": len(raw_skeleton),
            "codec": "zstd",
        },
        "tensors": [],
    }
    offset = len(sections[0])
    if bodies is None:
        bodies = _encode_bodies(coded, entropy_coding)
    for name, tensor in coded.items():
        body = bodies[name]
        header["tensors"].append(
            tensor_entry(name, written, tensor, entropy_coding, offset, len(body))
        )
        sections.append(body)
        offset += len(body)
    data = b"".join([header_bytes(header), *sections])
    return Package(data=data, skeleton_bytes=len(sections[0]), code_bytes=offset - len(sections[0]))


def tensor_entry(
    name: str,
    written: WrittenModel,
    tensor: CodedTensor,
    entropy_coding: bool,
    offset: int,
    length: int,
) -> dict[str, Any]:
    """The header's entry of one code tensor whose section is ``length`` bytes at ``offset``."""
    storage = written.codes[name]
    return {
        "name": name,
        "initializer": storage.initializer,
        "elem_type": storage.elem_type,
        "shape": list(np.shape(tensor.codes)),
        "code_min": int(tensor.code_min),
        "code_max": int(tensor.code_max),
        "coding": "entropy" if entropy_coding else "packed",
        "bits": code_bits(tensor),
        "offset": offset,
        "length": length,
    }


def header_bytes(header: dict[str, Any]) -> bytes:
    """The prefix and the JSON header: what comes before the sections."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, VERSION, 0, len(text)) + text


def _encode_bodies(coded: Mapping[str, CodedTensor], entropy_coding: bool) -> dict[str, bytes]:
    """Every tensor's ``encode_body``, ``UNPACK_THREADS`` tensors at a time (the coder
    releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, UNPACK_THREADS)) as pool:
        done = pool.map(lambda tensor: encode_body(tensor, entropy_coding), coded.values())
        return dict(zip(coded, done, strict=True))


def read_header(data: bytes | memoryview) -> tuple[dict[str, Any], int]:
    """The header of a package and the position where its sections start."""
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise InvalidPackageError(f"package truncated: {len(view)} bytes, less than the prefix")
    magic, version, _, length = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise InvalidPackageError(f"not a .qpack package: {magic=}, expected {MAGIC!r}")
    if version not in VERSIONS:
        raise InvalidPackageError(
            f"package {version=} is not supported (only {', '.join(map(str, VERSIONS))})"
        )
    start = _PREFIX.size + length
    if start > len(view):
        raise InvalidPackageError(f"package truncated inside its {length}-byte header")
    try:
        header = json.loads(bytes(view[_PREFIX.size : start]))
        header["format"] = ModelFormat(header["format"]).value
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidPackageError(f"package header is corrupt: {exc}") from None
    return header, start


def package_format(path: Path) -> str:
    """The format (``"onnx"``, ``"safetensors"`` or ``"npz"``) of the model that the package
    at ``path`` restores; only its header is read."""
    with path.open("rb") as file:
        prefix = file.read(_PREFIX.size)
        if len(prefix) == _PREFIX.size and prefix.startswith(MAGIC):  # else read_header says why
            prefix += file.read(_PREFIX.unpack_from(prefix)[3])
    return str(read_header(prefix)[0]["format"])


def _section(view: memoryview, start: int, entry: dict[str, Any], what: str) -> memoryview:
    begin, length = start + int(entry["offset"]), int(entry["length"])
    if begin + length > len(view):
        raise InvalidPackageError(
            f"package truncated: {what} needs bytes [{begin}, {begin + length}) of {len(view)}"
        )
    return view[begin : begin + length]


def unpack_model(data: bytes | memoryview) -> tuple[ModelFormat, onnx.ModelProto, str | None]:
    """The package's format, the restored model and the SHA-256 its bytes must have (``None``
    for a model written with external data)."""
    header, start = read_header(data)
    view = memoryview(data)
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            _section(view, start, header["skeleton"], "the skeleton"),
            max_output_size=int(header["skeleton"]["raw_size"]),
        )
        proto = onnx.ModelProto.FromString(raw)
    except (zstandard.ZstdError, ValueError, KeyError) as exc:
        raise InvalidPackageError(f"package skeleton is corrupt: {exc}") from None
    entries = header.get("tensors", [])
    tensors = _code_tensors(proto, {e["initializer"] for e in entries})
    for entry in entries:
        if entry["initializer"] not in tensors:
            raise InvalidPackageError(f"package codes of {entry['name']!r} do not fit the model")
    for entry, raw in _raw_data(view, start, entries):
        tensors[entry["initializer"]].raw_data = raw
    return ModelFormat(header["format"]), proto, header["onnx"].get("sha256")


def _raw_data(
    view: memoryview, start: int, entries: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each entry with its tensor's ``raw_data``, in order, decoded ``UNPACK_THREADS`` at a
    time (plus as many done and waiting, to bound memory)."""
    with ThreadPoolExecutor(max_workers=max(1, UNPACK_THREADS)) as pool:
        pending: deque[tuple[dict[str, Any], Future[bytes]]] = deque()
        try:
            for entry in entries:
                pending.append((entry, pool.submit(_tensor_raw_data, view, start, entry)))
                if len(pending) >= 2 * UNPACK_THREADS:
                    entry, future = pending.popleft()
                    yield entry, future.result()
            while pending:
                entry, future = pending.popleft()
                yield entry, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def _tensor_raw_data(view: memoryview, start: int, entry: dict[str, Any]) -> bytes:
    """One code tensor's ``raw_data``, from its section (on a worker thread)."""
    body = _section(view, start, entry, f"codes of {entry['name']!r}")
    count = int(np.prod(entry["shape"], dtype=np.int64))
    if entry["coding"] == "entropy":
        shifted = decode_codes(body, count=count)
    else:
        shifted = unpack_bits(body, int(entry["bits"]), count)
    if shifted.size != count:
        raise InvalidPackageError(f"package codes of {entry['name']!r} do not fit the model")
    elem_type = int(entry["elem_type"])
    return code_raw_data(_codes(shifted, int(entry["code_min"]), elem_type), elem_type)


def _codes(shifted: np.ndarray, code_min: int, elem_type: int) -> np.ndarray:
    """``shifted + code_min`` in the narrowest type that ``code_raw_data`` stores exactly:
    the container's own (sums wrap modulo its width, and the codes fit in it), the low
    nibble for 4-bit containers; int32 for anything else."""
    if elem_type in _FOUR_BIT:
        if shifted.dtype == np.uint8:
            return shifted + np.uint8(code_min & 0xF)  # only the low nibble is stored
    else:
        try:
            target = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        except (KeyError, TypeError, ValueError):  # not a type: code_raw_data says so
            target = np.dtype(np.float32)
        if target.kind in "iu" and shifted.itemsize <= target.itemsize:
            info = np.iinfo(target)
            if info.min <= code_min <= info.max:
                codes = shifted.astype(target)
                codes += target.type(code_min)  # wraps modulo the width, as it must
                return codes
    return shifted.astype(np.int32) + code_min


def unpack(data: bytes | memoryview) -> tuple[ModelFormat, bytes]:
    """The package's format and the exact bytes of the ``model.onnx`` it was built from
    (checked against the stored SHA-256)."""
    fmt, proto, expected = unpack_model(data)
    return fmt, _checked_bytes(proto, expected)


def _checked_bytes(proto: onnx.ModelProto, expected: str | None) -> bytes:
    """The serialized ``proto``, whose SHA-256 must be ``expected``."""
    if expected is None:
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
        data = package.read_bytes()
    except OSError as exc:
        raise InvalidPackageError(f"cannot read {package.name}: {exc.strerror}") from None
    fmt, proto, expected = unpack_model(data)
    if fmt is ModelFormat.ONNX and expected is None:
        return save_onnx(proto, out)  # the same writer, so the same files
    model_bytes = _checked_bytes(proto, expected)  # decoded once, above
    if fmt is ModelFormat.ONNX:
        out.write_bytes(model_bytes)
    elif fmt is ModelFormat.SAFETENSORS:
        write_safetensors(out, container_arrays(model_bytes), container_metadata(model_bytes))
    else:
        write_npz(out, container_arrays(model_bytes))
    return (out,)
