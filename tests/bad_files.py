"""Hostile input files, made in memory: .npz archives whose headers claim what they do not
hold, zip bombs, safetensors headers with every field wrong, ONNX tensors with absurd dims.

Shared by the core's tests (the readers refuse them) and the API's (each is a 4xx).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from tests import models


def npy_header(shape: tuple[int, ...], descr: str = "<f8", fortran: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": fortran, "shape": shape}
    )
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npz(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of the given member bytes (names as given: add ``.npy`` yourself)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def claiming_npz(shape: tuple[int, ...] = (2**30, 1024), name: str = "x") -> bytes:
    """A tiny archive whose one array claims ``shape`` of float64 but holds 64 bytes."""
    return npz({f"{name}.npy": npy_header(shape) + b"\0" * 64})


def deflate_bomb(inflated: int, name: str = "w") -> bytes:
    """An .npz of one uint8 array of ``inflated`` zeros, deflated (about 1000 to 1), written
    straight to a zip without holding the inflated bytes."""
    header = npy_header((inflated,), "|u1")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(header)
    body = [compressor.compress(header)]
    block = bytes(1 << 20)
    left = inflated
    while left:
        chunk = block[: min(left, len(block))]
        crc = zlib.crc32(chunk, crc)
        body.append(compressor.compress(chunk))
        left -= len(chunk)
    body.append(compressor.flush())
    data = b"".join(body)
    size = len(header) + inflated
    member = f"{name}.npy".encode()
    zip64 = struct.pack("<HHQQ", 1, 16, size, len(data))
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, 8, 0, 0x21, crc,
                        0xFFFFFFFF, 0xFFFFFFFF, len(member), len(zip64)) + member + zip64
    zip64_cd = struct.pack("<HHQQQ", 1, 24, size, len(data), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0, 8, 0, 0x21, crc,
                          0xFFFFFFFF, 0xFFFFFFFF, len(member), len(zip64_cd), 0, 0, 0, 0,
                          0xFFFFFFFF) + member + zip64_cd
    cd_offset = len(local) + len(data)
    eocd64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, len(central),
                         cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, cd_offset + len(central), 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), 0xFFFFFFFF, 0)
    return local + data + central + eocd64 + locator + eocd


def lying_npz(n: int = 10_000) -> bytes:
    """An archive whose member inflates past the size its zip headers declare (header and
    shape say ``n`` bytes; the deflated stream holds a megabyte more)."""
    header = npy_header((n,), "|u1")
    real = header + bytes(n) + bytes(1 << 20)
    buf = bytearray(npz({"x.npy": real}))
    declared = len(header) + n
    local = buf.find(b"PK\x03\x04")
    central = buf.find(b"PK\x01\x02")
    struct.pack_into("<L", buf, local + 22, declared)
    struct.pack_into("<L", buf, central + 24, declared)
    return bytes(buf)


def corrupt_deflate_npz(name: str = "x", rows: int = 15, valid_rows: int | None = None) -> bytes:
    """A deflated archive of one float32 array (``rows`` × 16) whose deflate stream breaks,
    with a block of a type that does not exist, where it starts (``valid_rows`` None: in the
    .npy header) or after ``valid_rows`` rows: zlib raises its own error, not a zip one, when
    the reader gets there (zipfile inflates 4 KiB of the stream at a time)."""
    array = np.random.default_rng(0).normal(size=(rows, 16)).astype(np.float32)
    raw = npy(array)
    buf = bytearray(npz({f"{name}.npy": raw}))
    local = buf.find(b"PK\x03\x04")
    (size,) = struct.unpack_from("<L", buf, local + 18)
    name_len, extra_len = struct.unpack_from("<2H", buf, local + 26)
    start = local + 30 + name_len + extra_len
    prefix = b""
    if valid_rows is not None:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        good = raw[: len(raw) - array.nbytes + valid_rows * array[0].nbytes]
        prefix = compressor.compress(good) + compressor.flush(zlib.Z_FULL_FLUSH)
    broken = prefix + b"\xff"  # final block, type 3
    assert len(broken) <= size  # the archive's sizes and directory stay as they are
    buf[start : start + len(broken)] = broken
    return bytes(buf)


def safetensors(header: dict[str, Any] | bytes, data: bytes = b"") -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def f32_entry(shape: list[Any], begin: Any, end: Any, dtype: str = "F32") -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def nested_json(depth: int) -> bytes:
    """``{"a": {"a": ... 1 ...}}``, ``depth`` objects deep."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def onnx_with(tensor: TensorProto) -> bytes:
    """The test MLP with its first weight replaced by ``tensor`` (named ``fc0.weight``)."""
    model = models.mlp(seed=0)
    graph = model.graph
    index = next(i for i, t in enumerate(graph.initializer) if t.name == "fc0.weight")
    tensor.name = "fc0.weight"
    graph.initializer[index].CopyFrom(tensor)
    return model.SerializeToString()


def onnx_with_undecodable_operator() -> bytes:
    """The test MLP with its first node's operator named by bytes that are not UTF-8 (protobuf
    parses them, and hands them back as bytes)."""
    model = models.mlp(seed=0)
    model.graph.node[0].op_type = "Q\u00e9mm"
    data = model.SerializeToString()
    assert data.count("Q\u00e9mm".encode()) == 1
    return data.replace("Q\u00e9mm".encode(), b"Q\xe9mm\xff")


def raw_tensor(dims: list[int], raw: bytes, data_type: int = TensorProto.FLOAT) -> TensorProto:
    return TensorProto(name="fc0.weight", data_type=data_type, dims=dims, raw_data=raw)


def external_tensor(dims: list[int], **entries: str) -> TensorProto:
    tensor = TensorProto(name="fc0.weight", data_type=TensorProto.FLOAT, dims=dims)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "w.bin", **entries}.items():
        tensor.external_data.add(key=key, value=value)
    return tensor


def typed_tensor(dims: list[int], values: list[float]) -> TensorProto:
    tensor = TensorProto(name="fc0.weight", data_type=TensorProto.FLOAT, dims=dims)
    tensor.float_data.extend(values)
    return tensor


def model_bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()
