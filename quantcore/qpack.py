"""``model.qpack``: the compact package of a quantized model, and its exact inverse.

A package holds the final ``model.onnx`` in two parts: the *skeleton* (the whole ModelProto
with the ``raw_data`` of every code tensor emptied: graph, scales, offsets, codebooks and the
tensors left in float), compressed with zstd; and each code tensor's integer codes, shifted
to start at zero and entropy-coded (``quantcore.entropy``) or, with
``entropy_coding=false``, bit-packed at their code width (``quantcore.packing``). Unpacking
refills each code tensor's ``raw_data`` (4-bit types two per byte, low nibble first, as ONNX
stores them) and serializes: the result is ``model.onnx`` byte for byte, which is checked
against the SHA-256 stored in the header.

Layout, version 1 (integers little-endian)::

    prefix (16 bytes, struct "<8sHHI"): magic b"QPACK\\r\\n\\x1a", version (1), flags (0),
                                        length of the header in bytes
    header: UTF-8 JSON object
        format:    "onnx" | "safetensors" | "npz"   (what unpacking writes)
        onnx:      {sha256, size}                    (of the model.onnx the package restores)
        skeleton:  {offset, length, raw_size, codec: "zstd"}
        tensors:   [{name, initializer, elem_type, shape, code_min, code_max,
                     coding: "entropy" | "packed", bits, offset, length}]
    sections: the skeleton and each tensor's codes, at ``offset`` bytes after the header

For weights-only inputs the ONNX model is the container graph of
``quantcore.formats.container``; unpacking runs it and writes the weights file.

Errors: a truncated or corrupt package, an unknown magic or version, or a restored model
whose SHA-256 differs all raise ``InvalidPackageError`` with what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import zstandard

from quantcore.entropy import decode_codes, encode_codes
from quantcore.errors import InvalidPackageError
from quantcore.formats.container import container_arrays
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_reader import walk_graphs
from quantcore.formats.onnx_writer import CodedTensor, WrittenModel, code_raw_data, serialize
from quantcore.formats.weights_io import write_npz, write_safetensors
from quantcore.packing import pack_bits, unpack_bits

MAGIC = b"QPACK\r\n\x1a"
VERSION = 1
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


def pack(
    written: WrittenModel,
    coded: Mapping[str, CodedTensor],
    *,
    fmt: ModelFormat,
    entropy_coding: bool = True,
    onnx_bytes: bytes | None = None,
) -> Package:
    """Build the package of ``written`` (whose code tensors hold ``coded``'s codes).

    ``onnx_bytes`` is ``serialize(written.proto)`` when the caller already has it.
    """
    model_bytes = serialize(written.proto) if onnx_bytes is None else onnx_bytes
    raw_skeleton = skeleton(written)
    sections = [zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw_skeleton)]
    header: dict[str, Any] = {
        "format": fmt.value,
        "onnx": {"sha256": hashlib.sha256(model_bytes).hexdigest(), "size": len(model_bytes)},
        "skeleton": {
            "offset": 0,
            "length": len(sections[0]),
            "raw_size": len(raw_skeleton),
            "codec": "zstd",
        },
        "tensors": [],
    }
    offset = len(sections[0])
    for name, tensor in coded.items():
        storage = written.codes[name]
        shifted = _shifted(tensor)
        bits = code_bits(tensor)
        body = encode_codes(shifted) if entropy_coding else pack_bits(shifted, bits)
        header["tensors"].append(
            {
                "name": name,
                "initializer": storage.initializer,
                "elem_type": storage.elem_type,
                "shape": list(shifted.shape),
                "code_min": int(tensor.code_min),
                "code_max": int(tensor.code_max),
                "coding": "entropy" if entropy_coding else "packed",
                "bits": bits,
                "offset": offset,
                "length": len(body),
            }
        )
        sections.append(body)
        offset += len(body)
    text = json.dumps(header, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(MAGIC, VERSION, 0, len(text))
    data = b"".join([prefix, text, *sections])
    return Package(data=data, skeleton_bytes=len(sections[0]), code_bytes=offset - len(sections[0]))


def read_header(data: bytes | memoryview) -> tuple[dict[str, Any], int]:
    """The header of a package and the position where its sections start."""
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise InvalidPackageError(f"package truncated: {len(view)} bytes, less than the prefix")
    magic, version, _, length = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise InvalidPackageError(f"not a .qpack package: {magic=}, expected {MAGIC!r}")
    if version != VERSION:
        raise InvalidPackageError(f"package {version=} is not supported (only {VERSION})")
    start = _PREFIX.size + length
    if start > len(view):
        raise InvalidPackageError(f"package truncated inside its {length}-byte header")
    try:
        header = json.loads(bytes(view[_PREFIX.size : start]))
        header["format"] = ModelFormat(header["format"]).value
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidPackageError(f"package header is corrupt: {exc}") from None
    return header, start


def _section(view: memoryview, start: int, entry: dict[str, Any], what: str) -> memoryview:
    begin, length = start + int(entry["offset"]), int(entry["length"])
    if begin + length > len(view):
        raise InvalidPackageError(
            f"package truncated: {what} needs bytes [{begin}, {begin + length}) of {len(view)}"
        )
    return view[begin : begin + length]


def unpack(data: bytes | memoryview) -> tuple[ModelFormat, bytes]:
    """The package's format and the exact bytes of the ``model.onnx`` it was built from."""
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
        body = _section(view, start, entry, f"codes of {entry['name']!r}")
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if entry["coding"] == "entropy":
            shifted = decode_codes(body)
        else:
            shifted = unpack_bits(body, int(entry["bits"]), count)
        if shifted.size != count or entry["initializer"] not in tensors:
            raise InvalidPackageError(f"package codes of {entry['name']!r} do not fit the model")
        codes = shifted.astype(np.int32) + int(entry["code_min"])
        tensors[entry["initializer"]].raw_data = code_raw_data(codes, int(entry["elem_type"]))
    model_bytes = serialize(proto)
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != header["onnx"]["sha256"]:
        raise InvalidPackageError(
            f"restored model's sha256 {digest} differs from the package's "
            f"{header['onnx']['sha256']} (corrupt package)"
        )
    return ModelFormat(header["format"]), model_bytes


def unpack_file(package: Path, out: Path) -> tuple[Path, ...]:
    """Restore ``package`` into ``out``: ``model.onnx`` itself, or for a weights-only package the
    ``.safetensors``/``.npz`` file with the dequantized weights. Returns the files written."""
    try:
        data = package.read_bytes()
    except OSError as exc:
        raise InvalidPackageError(f"cannot read {package.name}: {exc.strerror}") from None
    fmt, model_bytes = unpack(data)
    if fmt is ModelFormat.ONNX:
        out.write_bytes(model_bytes)
    elif fmt is ModelFormat.SAFETENSORS:
        write_safetensors(out, container_arrays(model_bytes))
    else:
        write_npz(out, container_arrays(model_bytes))
    return (out,)
