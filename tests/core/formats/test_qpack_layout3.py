"""model.qpack layout 3: codes decoded straight into model.onnx's bytes, tensors written as
they come, and headers that lie about sizes refused before anything is allocated."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import zstandard

from quantcore.coding import context, rans, rans_batch
from quantcore.coding.entropy import encode_codes
from quantcore.errors import InvalidPackageError
from quantcore.formats import qpack_restore, qpack_writer
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_reader import OnnxModel, load_onnx, walk_graphs
from quantcore.formats.onnx_wire import raw_data_regions
from quantcore.formats.onnx_writer import WrittenModel, rewrite, serialize
from quantcore.formats.qpack import (
    PackageWriter,
    _shifted,
    encode_body,
    pack,
    read_header,
    tensor_entry,
    unpack,
    unpack_file,
)
from quantcore.formats.qpack_common import HEADER_LIMIT, TRAILER
from quantcore.quantizers.codes import QuantizedTensor
from tests import models
from tests.core.formats.onnx_helpers import affine, codebook


def _built(
    tmp_path: Path, model: onnx.ModelProto, bits: int, book: bool = False
) -> tuple[WrittenModel, dict[str, QuantizedTensor]]:
    onnx.save(model, tmp_path / "in.onnx")
    source: OnnxModel = load_onnx(tmp_path / "in.onnx")
    names = [t.name for t in source.tensors if t.role == "weight"]
    quantize = (lambda a: codebook(a, bits)) if book else (lambda a: affine(a, bits))
    coded = {n: quantize(source.array(n)) for n in names}
    return rewrite(source, coded), coded


@pytest.mark.parametrize(("bits", "book"), [(4, False), (3, True), (8, False), (7, True)])
def test_tensors_over_several_chunks_restore_exactly(tmp_path, bits, book, monkeypatch):
    # 2049 x 1025 codes: two chunks of the coder, an odd count (a half-filled last byte at
    # 4 bits); pieces of 64 KiB so that many are hashed as they fill.
    monkeypatch.setattr(qpack_writer, "PIECE_BYTES", 1 << 16)
    written, coded = _built(tmp_path, models.mlp(sizes=(2049, 1025, 10), opset=21), bits, book)
    model_bytes = serialize(written.proto)
    data = pack(written, coded, fmt=ModelFormat.ONNX).data
    assert unpack(data)[1] == model_bytes
    (tmp_path / "m.qpack").write_bytes(data)
    assert unpack_file(tmp_path / "m.qpack", tmp_path / "out.onnx") == (tmp_path / "out.onnx",)
    assert (tmp_path / "out.onnx").read_bytes() == model_bytes
    header, _ = read_header(data)
    assert len(header["onnx"]["piece_xxh3_128"]) == -(-len(model_bytes) // (1 << 16))


def test_raw_data_regions_are_where_the_tensors_bytes_are(tmp_path):
    written, _ = _built(tmp_path, models.if_model(), 4)
    model_bytes = serialize(written.proto)
    names = [c.initializer for c in written.codes.values()]
    regions = raw_data_regions(model_bytes, names)
    tensors = {i.name: i for g, _ in walk_graphs(written.proto.graph, "g") for i in g.initializer}
    assert set(regions) == set(names) and len(names) >= 2
    for name, (at, length) in regions.items():
        assert model_bytes[at : at + length] == tensors[name].raw_data


def test_a_streamed_package_equals_the_packed_one(tmp_path, monkeypatch):
    # Tensors appended one by one into a file, the regions given by the caller; the caller
    # hears of each hashed piece (to drop a mapping's pages), every byte once.
    monkeypatch.setattr(qpack_writer, "PIECE_BYTES", 512)
    written, coded = _built(tmp_path, models.cnn(), 5, book=True)
    model_bytes = serialize(written.proto)
    expected = pack(written, coded, fmt=ModelFormat.ONNX).data
    regions = raw_data_regions(model_bytes, [c.initializer for c in written.codes.values()])
    hashed: list[tuple[int, int]] = []
    with (tmp_path / "s.qpack").open("wb") as file:
        writer = PackageWriter(file, ModelFormat.ONNX)
        for name, tensor in coded.items():
            writer.add(name, tensor_entry(name, written, tensor, True), encode_body(tensor, True))
        size = writer.finish(model_bytes, regions, lambda at, n: hashed.append((at, n)))
    assert (tmp_path / "s.qpack").read_bytes() == expected and size == len(expected)
    starts = range(0, len(model_bytes), 512)
    assert sorted(hashed) == [(at, min(512, len(model_bytes) - at)) for at in starts]
    assert len(hashed) > 1


def test_entries_described_after_the_sections_give_the_same_package(tmp_path):
    # A streaming writer appends each section before the written model (which names the
    # tensor's initializer and type) exists; the entries come later, in any order.
    written, coded = _built(tmp_path, models.if_model(), 4)
    model_bytes = serialize(written.proto)
    expected = pack(written, coded, fmt=ModelFormat.ONNX).data
    file = io.BytesIO()
    writer = PackageWriter(file, ModelFormat.ONNX)
    for name, tensor in coded.items():
        writer.add(name, {}, encode_body(tensor, True))
    for name, tensor in reversed(coded.items()):
        writer.describe(name, tensor_entry(name, written, tensor, True))
    writer.finish(model_bytes)
    assert file.getvalue() == expected and len(coded) >= 2


def _package(tmp_path: Path) -> tuple[bytes, bytes]:
    written, coded = _built(tmp_path, models.mlp(opset=21), 4)
    return pack(written, coded, fmt=ModelFormat.ONNX).data, serialize(written.proto)


def _with_header(data: bytes, change: Any) -> bytes:
    """The package with its header changed by ``change(header)``."""
    header, _ = read_header(data)
    begin = TRAILER.unpack_from(data, len(data) - TRAILER.size)[0]
    del header["version"]
    change(header)
    text = json.dumps(header).encode()
    return data[:begin] + text + TRAILER.pack(begin, len(text), b"QIDX")


def _set(path: str, value: Any) -> Any:
    def change(header: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = header
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return change


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("onnx.size", 1 << 50, "size"),
        ("onnx.size", -1, "size"),
        ("onnx.size", "12", "size"),
        ("tensors.0.shape", [1 << 30, 1 << 30], "more than a package of this size"),
        ("tensors.0.shape", [-3, 5], "shape"),
        ("tensors.0.at", 1 << 40, "at="),
        ("tensors.0.raw_length", 7, "do not fit"),
        ("tensors.0.length", 1 << 40, "length="),
        ("tensors.0.offset", 1 << 20, "offset|truncated"),
        ("skeleton.raw_size", 1 << 45, "raw_size"),
        ("skeleton.raw_size", 10, "do not make"),
        ("onnx.piece_xxh3_128", [], "piece hashes"),
        ("onnx.piece_bytes", 0, "piece hashes"),
        ("tensors.0.elem_type", 999, "elem_type"),
        ("tensors.0.coding", "magic", "do not fit"),
        ("tensors", "none", "corrupt"),
    ],
)
def test_a_header_that_lies_is_refused_before_allocating(tmp_path, path, value, message):
    data, _ = _package(tmp_path)
    with pytest.raises(InvalidPackageError, match=message):
        unpack(_with_header(data, _set(path, value)))


def test_overlapping_tensors_are_refused(tmp_path):
    data, _ = _package(tmp_path)
    header, _ = read_header(data)
    first, second = header["tensors"][:2]
    if second["raw_length"] <= first["raw_length"]:
        first, second = second, first

    def overlap(h: dict[str, Any]) -> None:
        for entry in h["tensors"]:
            if entry["name"] == first["name"]:
                entry["at"] = second["at"]

    with pytest.raises(InvalidPackageError, match=r"overlap|do not make"):
        unpack(_with_header(data, overlap))


def test_codes_that_decode_but_differ_fail_the_hash_and_leave_no_file(tmp_path):
    # A valid stream (its CRC intact) of other codes: only the model's piece hashes can tell.
    written, coded = _built(tmp_path, models.mlp(opset=21), 4)
    first = next(iter(coded))
    bodies = {n: encode_body(q, True) for n, q in coded.items()}
    codes = _shifted(coded[first]).ravel().copy()
    other = int(np.flatnonzero(codes != codes[0])[0])
    codes[[0, other]] = codes[[other, 0]]  # the same counts, so the same table
    bodies[first] = encode_codes(codes)
    data = pack(written, coded, fmt=ModelFormat.ONNX, bodies=bodies).data
    with pytest.raises(InvalidPackageError, match="differ from the package's hash"):
        unpack(data)
    (tmp_path / "bad.qpack").write_bytes(data)
    out = tmp_path / "out.onnx"
    with pytest.raises(InvalidPackageError):
        unpack_file(tmp_path / "bad.qpack", out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def _as_version_3(data: bytes, model_bytes: bytes, piece: int) -> bytes:
    """The package as version 3 wrote it: the same sections, its pieces hashed with SHA-256."""

    def sha256_pieces(header: dict[str, Any]) -> None:
        del header["onnx"]["piece_xxh3_128"]
        header["onnx"]["piece_sha256"] = [
            hashlib.sha256(model_bytes[at : at + piece]).hexdigest()
            for at in range(0, len(model_bytes), piece)
        ]

    changed = _with_header(data, sha256_pieces)
    return changed[:8] + struct.pack("<H", 3) + changed[10:]


def test_version_3_packages_hashed_with_sha256_still_restore(tmp_path):
    data, model_bytes = _package(tmp_path)
    header, _ = read_header(data)
    piece = header["onnx"]["piece_bytes"]
    old = _as_version_3(data, model_bytes, piece)
    assert read_header(old)[0]["version"] == 3
    assert unpack(old)[1] == model_bytes
    (tmp_path / "old.qpack").write_bytes(old)
    unpack_file(tmp_path / "old.qpack", tmp_path / "old.onnx")
    assert (tmp_path / "old.onnx").read_bytes() == model_bytes
    # Its SHA-256 still checks the restored bytes: one wrong digest is refused.
    digests = read_header(old)[0]["onnx"]["piece_sha256"]
    other = [hashlib.sha256(b"x").hexdigest(), *digests[1:]]
    wrong = _with_header(old, _set("onnx.piece_sha256", other))
    with pytest.raises(InvalidPackageError, match="differ from the package's hash"):
        unpack(wrong[:8] + struct.pack("<H", 3) + wrong[10:])
    # A version-4 header holding SHA-256 digests names what it lacks.
    with pytest.raises(InvalidPackageError, match="piece_xxh3_128"):
        unpack(old[:8] + struct.pack("<H", 4) + old[10:])


def test_every_flipped_byte_or_cut_is_refused(tmp_path):
    data, model_bytes = _package(tmp_path)
    rng = np.random.default_rng(0)
    for position in rng.choice(len(data), 60, replace=False).tolist():
        bad = bytearray(data)
        bad[position] ^= 0x40
        try:
            restored = unpack(bytes(bad))[1]
        except InvalidPackageError:
            continue
        # A flip that changes nothing restored (inside the header's JSON whitespace-free
        # text it cannot; in a name it renames nothing used) still gives the model exactly.
        assert restored == model_bytes
    for cut in range(0, len(data), max(1, len(data) // 40)):
        with pytest.raises(InvalidPackageError, match=r"truncated|corrupt|not a"):
            unpack(data[:cut])


def test_a_package_of_an_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.qpack").write_bytes(b"")
    with pytest.raises(InvalidPackageError, match="truncated"):
        unpack_file(tmp_path / "empty.qpack", tmp_path / "out.onnx")
    with pytest.raises(InvalidPackageError, match="trailer"):
        unpack(struct.pack("<8sHHI", b"QPACK\r\n\x1a", 3, 0, 0) + bytes(20))


def test_in_memory_writer_matches_pack(tmp_path):
    written, coded = _built(tmp_path, models.mlp(opset=21), 3)
    buffer = io.BytesIO()
    writer = PackageWriter(buffer, ModelFormat.ONNX)
    for name, tensor in coded.items():
        writer.add(name, tensor_entry(name, written, tensor, False), encode_body(tensor, False))
    writer.finish(serialize(written.proto))
    assert unpack(buffer.getvalue())[1] == serialize(written.proto)


@pytest.mark.parametrize(("bits", "stream"), [(4, 3), (8, 3), (3, 1), (12, 2), (5, 4), (12, 4)])
def test_every_stream_version_restores_in_place(tmp_path, bits, stream):
    # Context-modelled (v3), order-0 (v2), constriction (v1) and adaptive (v4) streams, into
    # 4-bit, 8-bit and 16-bit containers.
    written, coded = _built(tmp_path, models.mlp(sizes=(300, 200, 10), opset=21), bits)
    bodies = {n: encode_codes(_shifted(q), version=stream) for n, q in coded.items()}
    assert {b[4] for b in bodies.values()} == {stream}
    data = pack(written, coded, fmt=ModelFormat.ONNX, bodies=bodies).data
    assert unpack(data)[1] == serialize(written.proto)


@pytest.mark.parametrize("bits", [4, 8])
def test_batches_of_chunks_across_tensors_restore_exactly(tmp_path, bits, monkeypatch):
    # Chunks of 3000 codes and batches of 5: batches straddle tensors, mix v2 and v3 streams
    # (the grouped vector decoder and the chunks' own fill) and end in partial groups.
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", 3000)
    monkeypatch.setattr(context, "CHUNK_SYMBOLS", 3000)
    monkeypatch.setattr(qpack_restore, "BATCH_CHUNKS", 5)
    monkeypatch.setattr(qpack_writer, "PIECE_BYTES", 1 << 14)
    written, coded = _built(tmp_path, models.mlp(sizes=(300, 200, 30), opset=21), bits)
    bodies = {n: encode_codes(_shifted(q), version=2 + i % 2)
              for i, (n, q) in enumerate(sorted(coded.items()))}  # fmt: skip
    assert {b[4] for b in bodies.values()} == {2, 3}
    (tmp_path / "m.qpack").write_bytes(
        pack(written, coded, fmt=ModelFormat.ONNX, bodies=bodies).data
    )
    for vector in (True, False):  # where the CPU has AVX2 or AVX-512; then the scalar kernels
        if not vector:
            monkeypatch.setattr(rans_batch, "_usable", False)
            monkeypatch.setattr(rans_batch, "_kernels", None)
        unpack_file(tmp_path / "m.qpack", tmp_path / "out.onnx")
        assert (tmp_path / "out.onnx").read_bytes() == serialize(written.proto)


def test_the_header_is_stored_compressed_and_plain_json_still_reads(tmp_path):
    data, model_bytes = _package(tmp_path)
    begin, length, _ = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    stored = data[begin : begin + length]
    assert stored.startswith(b"\x28\xb5\x2f\xfd")  # a zstd frame
    plain = json.dumps(read_header(data)[0], separators=(",", ":")).encode()
    assert len(stored) < len(plain)
    # A package whose header is plain JSON (the same fields) restores the same model.
    assert unpack(_with_header(data, lambda header: None))[1] == model_bytes


def test_a_header_frame_that_inflates_past_the_limit_is_refused(tmp_path):
    data, _ = _package(tmp_path)
    begin = TRAILER.unpack_from(data, len(data) - TRAILER.size)[0]
    bomb = zstandard.ZstdCompressor(level=1).compress(b" " * (HEADER_LIMIT + 2))
    bad = data[:begin] + bomb + TRAILER.pack(begin, len(bomb), b"QIDX")
    with pytest.raises(InvalidPackageError, match="inflates past"):
        unpack(bad)


def test_where_the_output_cannot_be_allocated_ahead_it_is_written_whole(tmp_path, monkeypatch):
    # A file system without fallocate (or mmap): decoded in memory, then written; a corrupt
    # package still leaves no file.
    data, model_bytes = _package(tmp_path)
    (tmp_path / "m.qpack").write_bytes(data)

    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    assert unpack_file(tmp_path / "m.qpack", tmp_path / "out.onnx") == (tmp_path / "out.onnx",)
    assert (tmp_path / "out.onnx").read_bytes() == model_bytes
    header, _ = read_header(data)
    bad = bytearray(data)
    bad[header["tensors"][0]["offset"] + 40] ^= 0x10
    (tmp_path / "bad.qpack").write_bytes(bytes(bad))
    with pytest.raises(InvalidPackageError):
        unpack_file(tmp_path / "bad.qpack", tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("bits", [4, 8])
def test_codes_are_written_to_the_file_and_short_writes_resumed(tmp_path, bits, monkeypatch):
    # Into a file, the decoded chunks go out by pwrite (not through the file's mapping); a
    # write that takes fewer bytes than given is resumed where it stopped.
    written, coded = _built(tmp_path, models.mlp(sizes=(300, 200, 30), opset=21), bits)
    (tmp_path / "m.qpack").write_bytes(pack(written, coded, fmt=ModelFormat.ONNX).data)
    real, calls = os.pwrite, []

    def short(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        return real(fd, memoryview(data)[:1000], offset)

    monkeypatch.setattr(os, "pwrite", short)
    unpack_file(tmp_path / "m.qpack", tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx").read_bytes() == serialize(written.proto)
    assert len(calls) > 30  # 60,000+ bytes of codes, 1000 a call


def test_a_write_that_fails_leaves_no_file(tmp_path, monkeypatch):
    data, _ = _package(tmp_path)
    (tmp_path / "m.qpack").write_bytes(data)

    def failing(fd: int, data: Any, offset: int) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pwrite", failing)
    with pytest.raises(OSError, match="Input/output error"):
        unpack_file(tmp_path / "m.qpack", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("bits", [4, 8])
def test_every_byte_of_the_scratch_buffer_is_written(tmp_path, bits, monkeypatch):
    # A scratch buffer full of other bytes (as one reused from a previous batch) changes
    # nothing: each decoder writes every byte of its chunk, the half-filled last byte of an
    # odd count of 4-bit codes included; with the vector decoders and the scalar ones.
    monkeypatch.setattr(rans, "CHUNK_SYMBOLS", 3000)
    monkeypatch.setattr(context, "CHUNK_SYMBOLS", 3000)
    monkeypatch.setattr(qpack_restore, "_scratch", lambda size: np.full(size, 0xAB, np.uint8))
    written, coded = _built(tmp_path, models.mlp(sizes=(301, 199, 31), opset=21), bits)
    (tmp_path / "m.qpack").write_bytes(pack(written, coded, fmt=ModelFormat.ONNX).data)
    for vector in (True, False):
        if not vector:
            monkeypatch.setattr(rans_batch, "_usable", False)
            monkeypatch.setattr(rans_batch, "_kernels", None)
        unpack_file(tmp_path / "m.qpack", tmp_path / "out.onnx")
        assert (tmp_path / "out.onnx").read_bytes() == serialize(written.proto)
