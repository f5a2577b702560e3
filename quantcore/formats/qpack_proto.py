"""Packages whose skeleton is a ``ModelProto``: layouts 1 and 2 (still read, and written by
``pack_layout2`` for tests and comparisons), and layout 3's models past 2 GB (written with
external data, so there are no single ``model.onnx`` bytes to cut).

The skeleton is the whole model with the code tensors' ``raw_data`` emptied, compressed with
zstd. Restoring decodes each tensor (``UNPACK_THREADS`` at a time), refills its ``raw_data``
on the calling thread in the header's order, and the caller serializes the proto.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import onnx
import zstandard

from quantcore.coding.entropy import decode_codes
from quantcore.coding.packing import unpack_bits
from quantcore.coding.parallel import cores
from quantcore.errors import InvalidPackageError
from quantcore.formats.containers import code_raw_data
from quantcore.formats.onnx_reader import walk_graphs
from quantcore.formats.onnx_writer import CodedTensor, WrittenModel
from quantcore.formats.qpack_common import (
    MAGIC,
    PREFIX,
    code_bits,
    code_count,
    header_int,
    narrow_codes,
    output_bound,
    section,
)

UNPACK_THREADS = cores()  # tensors decoded at once
ZSTD_LEVEL = 3


def code_tensors(proto: onnx.ModelProto, names: set[str]) -> dict[str, onnx.TensorProto]:
    found = {}
    for graph, _ in walk_graphs(proto.graph, "graph"):
        for init in graph.initializer:
            if init.name in names:
                found[init.name] = init
    return found


def skeleton(written: WrittenModel) -> bytes:
    """The serialized model with the code tensors' ``raw_data`` emptied (the proto is left as
    it was)."""
    return proto_skeleton(written.proto, {c.initializer for c in written.codes.values()})


def proto_skeleton(proto: onnx.ModelProto, initializers: set[str]) -> bytes:
    """``proto`` serialized with the ``raw_data`` of ``initializers`` emptied."""
    tensors = code_tensors(proto, initializers)
    # Only fields that are set are put back: setting an empty one would add it (a skeleton's
    # code tensors have none, and a model saved afterwards must not get one).
    stash = {name: t.raw_data for name, t in tensors.items() if t.HasField("raw_data")}
    try:
        for tensor in tensors.values():
            tensor.ClearField("raw_data")
        return proto.SerializeToString()
    finally:
        for name, data in stash.items():
            tensors[name].raw_data = data


def tensor_entry(
    name: str, written: WrittenModel, coded: CodedTensor, entropy_coding: bool
) -> dict[str, Any]:
    """A tensor's header entry, but for where its section is."""
    storage = written.codes[name]
    return {
        "name": name,
        "initializer": storage.initializer,
        "elem_type": storage.elem_type,
        "shape": list(np.shape(coded.codes)),
        "code_min": int(coded.code_min),
        "code_max": int(coded.code_max),
        "coding": "entropy" if entropy_coding else "packed",
        "bits": code_bits(coded),
    }


def pack_layout2(
    written: WrittenModel,
    coded: Mapping[str, CodedTensor],
    bodies: Mapping[str, bytes],
    *,
    fmt: str,
    onnx_sha256: str,
    onnx_size: int,
    entropy_coding: bool = True,
    version: int = 2,
) -> bytes:
    """A package in layout 2 (or 1: the same bytes but for the version), as the writer before
    layout 3 made it: for tests that old packages still unpack, and for comparisons."""
    entries = [tensor_entry(name, written, t, entropy_coding) for name, t in coded.items()]
    return layout2_bytes(written.proto, entries, [bodies[name] for name in coded], fmt=fmt,
                         onnx_sha256=onnx_sha256, onnx_size=onnx_size, version=version)  # fmt: skip


def layout2_bytes(
    proto: onnx.ModelProto,
    entries: list[dict[str, Any]],
    bodies: list[bytes],
    *,
    fmt: str,
    onnx_sha256: str,
    onnx_size: int,
    version: int = 2,
) -> bytes:
    """``pack_layout2`` from the tensors' header entries (``tensor_entry``) and sections."""
    raw_skeleton = proto_skeleton(proto, {e["initializer"] for e in entries})
    sections = [zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(
        raw_skeleton)]  # fmt: skip
    header: dict[str, Any] = {
        "format": fmt,
        "onnx": {"sha256": onnx_sha256, "size": onnx_size, "external_data": False},
        "skeleton": {
            "offset": 0,
            "length": len(sections[0]),
            "raw_size": len(raw_skeleton),
            "codec": "zstd",
        },
        "tensors": [],
    }
    offset = len(sections[0])
    for entry, body in zip(entries, bodies, strict=True):
        header["tensors"].append({**entry, "offset": offset, "length": len(body)})
        sections.append(body)
        offset += len(body)
    text = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([PREFIX.pack(MAGIC, version, 0, len(text)), text, *sections])


def restore_proto(view: memoryview, header: dict[str, Any], start: int) -> onnx.ModelProto:
    """The model of a package whose skeleton is a ``ModelProto``, its codes refilled."""
    bound = output_bound(len(view))
    try:
        raw_size = header_int(header["skeleton"], "raw_size", bound, "skeleton")
        raw = zstandard.ZstdDecompressor().decompress(
            section(view, start, header["skeleton"], "the skeleton"), max_output_size=raw_size
        )
        proto = onnx.ModelProto.FromString(raw)
    except (zstandard.ZstdError, ValueError, KeyError, TypeError) as exc:
        raise InvalidPackageError(f"package skeleton is corrupt: {exc}") from None
    entries = header.get("tensors", [])
    total = sum(code_count(entry, bound) for entry in entries)
    if total > bound:
        raise InvalidPackageError(f"package declares {total} codes, more than it can hold")
    tensors = code_tensors(proto, {e["initializer"] for e in entries})
    for entry in entries:
        if entry["initializer"] not in tensors:
            raise InvalidPackageError(f"package codes of {entry['name']!r} do not fit the model")
    for entry, data in _raw_data(view, start, entries, bound):
        tensors[entry["initializer"]].raw_data = data
    return proto


def _raw_data(
    view: memoryview, start: int, entries: list[dict[str, Any]], bound: int
) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each entry with its tensor's ``raw_data``, in order, decoded ``UNPACK_THREADS`` at a
    time (plus as many done and waiting, to bound memory)."""
    with ThreadPoolExecutor(max_workers=max(1, UNPACK_THREADS)) as pool:
        pending: deque[tuple[dict[str, Any], Future[bytes]]] = deque()
        try:
            for entry in entries:
                job = pool.submit(_tensor_raw_data, view, start, entry, bound)
                pending.append((entry, job))
                if len(pending) >= 2 * UNPACK_THREADS:
                    entry, future = pending.popleft()
                    yield entry, future.result()
            while pending:
                entry, future = pending.popleft()
                yield entry, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def _tensor_raw_data(view: memoryview, start: int, entry: dict[str, Any], bound: int) -> bytes:
    """One code tensor's ``raw_data``, from its section (on a worker thread)."""
    body = section(view, start, entry, f"codes of {entry['name']!r}")
    count = code_count(entry, bound)
    if entry["coding"] == "entropy":
        shifted = decode_codes(body, count=count)
    else:
        shifted = unpack_bits(body, header_int(entry, "bits", 32, "tensor"), count)
    if shifted.size != count:
        raise InvalidPackageError(f"package codes of {entry['name']!r} do not fit the model")
    elem_type = int(entry["elem_type"])
    return code_raw_data(narrow_codes(shifted, int(entry["code_min"]), elem_type), elem_type)
