"""model.qpack: unpacking gives back model.onnx byte for byte; the size is near the entropy."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
import xxhash
from onnx import TensorProto

from quantcore.coding.entropy import decode_codes, empirical_entropy_bits, encode_codes
from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.results import TensorRequest
from quantcore.errors import InvalidPackageError
from quantcore.formats import qpack
from quantcore.formats.container import build_container
from quantcore.formats.containers import code_raw_data
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_reader import OnnxModel, load_onnx
from quantcore.formats.onnx_writer import rewrite, serialize
from quantcore.formats.qpack import (
    _shifted,
    encode_body,
    pack,
    read_header,
    skeleton,
    unpack,
    unpack_file,
)
from quantcore.formats.qpack_proto import pack_layout2
from quantcore.formats.weights_io import read_npz, read_safetensors, write_npz, write_safetensors
from quantcore.quantizers.codes import QuantizedTensor
from quantcore.spec import QuantSpec
from tests import models
from tests.core.formats.onnx_helpers import affine, codebook


def _load(model: onnx.ModelProto, tmp_path: Path) -> OnnxModel:
    onnx.save(model, tmp_path / "in.onnx")
    return load_onnx(tmp_path / "in.onnx")


def _weights(source: OnnxModel) -> list[str]:
    return [t.name for t in source.tensors if t.role == "weight"]


CASES = {
    "int4": (lambda: models.mlp(opset=21), lambda a: affine(a, 3)),
    "int8-per-channel": (lambda: models.mlp(opset=17), lambda a: affine(a, 6, axis=0)),
    "int16": (lambda: models.mlp(opset=17), lambda a: affine(a, 12)),
    "uint4-codebook": (lambda: models.mlp(opset=21), lambda a: codebook(a, 4, scale=0.5)),
    "uint8-codebook": (lambda: models.cnn(), lambda a: codebook(a, 5)),
    "if-subgraphs": (lambda: models.if_model(), lambda a: affine(a, 4)),
    "constants": (lambda: models.with_constant_nodes(models.mlp()), lambda a: affine(a, 2)),
}


@pytest.mark.parametrize("entropy_coding", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_unpack_gives_model_onnx_exactly(tmp_path, case, entropy_coding):
    build, quantize = CASES[case]
    source = _load(build(), tmp_path)
    coded = {n: quantize(source.array(n)) for n in _weights(source)}
    written = rewrite(source, coded)
    model_bytes = serialize(written.proto)
    package = pack(written, coded, fmt=ModelFormat.ONNX, entropy_coding=entropy_coding)
    # Packing leaves the written model untouched.
    assert serialize(written.proto) == model_bytes
    fmt, restored = unpack(package.data)
    assert fmt is ModelFormat.ONNX
    assert restored == model_bytes
    (tmp_path / "model.qpack").write_bytes(package.data)
    out = tmp_path / "restored.onnx"
    assert unpack_file(tmp_path / "model.qpack", out) == (out,)
    assert out.read_bytes() == model_bytes
    header, _ = read_header(package.data)
    assert {t["coding"] for t in header["tensors"]} == {"entropy" if entropy_coding else "packed"}


def test_size_is_within_three_percent_of_entropy_plus_floats_plus_graph(tmp_path):
    source = _load(models.mlp(sizes=(256, 512, 512, 10)), tmp_path)
    coded = {n: affine(source.array(n), 4) for n in _weights(source)}
    written = rewrite(source, coded)
    package = pack(written, coded, fmt=ModelFormat.ONNX)
    codes_bits = sum(
        empirical_entropy_bits(q.codes - q.code_min) * q.codes.size for q in coded.values()
    )
    ideal = codes_bits / 8 + len(skeleton(written))
    assert len(package.data) <= 1.03 * ideal
    # And the entropy coding pays: 4-bit codes of Laplacian weights have entropy < 4 bits.
    packed = pack(written, coded, fmt=ModelFormat.ONNX, entropy_coding=False)
    assert len(package.data) < len(packed.data)


def _package(tmp_path: Path) -> bytes:
    source = _load(models.mlp(), tmp_path)
    coded = {n: affine(source.array(n), 3) for n in _weights(source)}
    return pack(rewrite(source, coded), coded, fmt=ModelFormat.ONNX).data


def test_truncated_package_is_refused(tmp_path):
    data = _package(tmp_path)
    for cut in (4, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(InvalidPackageError, match=r"truncated|corrupt"):
            unpack(data[:cut])


def test_corrupt_codes_or_skeleton_are_refused(tmp_path):
    data = bytearray(_package(tmp_path))
    header, start = read_header(bytes(data))
    for position in (start + 5, start + header["tensors"][0]["offset"] + 40, len(data) - 3):
        bad = bytearray(data)
        bad[position] ^= 0x5A
        with pytest.raises(InvalidPackageError):
            unpack(bytes(bad))


def test_wrong_magic_and_version(tmp_path):
    data = _package(tmp_path)
    with pytest.raises(InvalidPackageError, match=r"not a \.qpack"):
        unpack(b"PK\x03\x04" + data[4:])
    with pytest.raises(InvalidPackageError, match="version=9"):
        unpack(data[:8] + b"\x09\x00" + data[10:])


@pytest.mark.parametrize("fmt", [ModelFormat.SAFETENSORS, ModelFormat.NPZ])
def test_weights_package_unpacks_to_dequantized_weights(tmp_path, fmt):
    rng = np.random.default_rng(3)
    arrays = {
        "fc.weight": rng.laplace(size=(64, 32)).astype(np.float32),
        "fc.bias": rng.normal(size=64).astype(np.float32),
        "emb.weight": rng.laplace(size=(50, 16)).astype(np.float16),
    }
    path = tmp_path / f"in.{fmt.value}"
    if fmt is ModelFormat.SAFETENSORS:
        write_safetensors(path, arrays.items())
        model = read_safetensors(path)
    else:
        write_npz(path, arrays.items())
        model = read_npz(path)
    coded: dict[str, QuantizedTensor] = {
        "fc.weight": affine(model.array("fc.weight"), 4, axis=0),
        "emb.weight": codebook(model.array("emb.weight").astype(np.float32), 3),
    }
    written = rewrite(build_container(model, coded), coded)
    (tmp_path / "model.qpack").write_bytes(pack(written, coded, fmt=fmt).data)
    out = tmp_path / f"out.{fmt.value}"
    unpack_file(tmp_path / "model.qpack", out)
    back = read_safetensors(out) if fmt is ModelFormat.SAFETENSORS else read_npz(out)
    assert [t.name for t in back.tensors] == list(arrays)
    np.testing.assert_array_equal(back.array("fc.weight"), coded["fc.weight"].dequantized)
    np.testing.assert_array_equal(
        back.array("emb.weight"), coded["emb.weight"].dequantized.astype(np.float16)
    )
    np.testing.assert_array_equal(back.array("fc.bias"), arrays["fc.bias"])


@pytest.mark.parametrize(
    ("method", "bits", "granularity"),
    [("uniform", 8, "layer"), ("uniform", 3, "channel"), ("uniform", 12, "layer"),
     ("deadzone", 5, "layer"), ("log", 4, "channel"), ("float", 8, "layer")],
)  # fmt: skip
def test_quantizer_counts_give_the_same_codes_section(method, bits, granularity):
    # The quantizer counts its codes by unsigned bit pattern (signed codes too); shifted by
    # code_min they must be exactly the counts the coder would take itself.
    spec = QuantSpec.from_dict({"bits": bits, "method": method, "granularity": granularity})
    weights = np.random.default_rng(bits).laplace(size=(64, 300)).astype(np.float32)
    request = TensorRequest(name="w", weights=weights, quantizer=spec.quantizer_for("w"),
                            channel_axis=0)  # fmt: skip
    (result,) = quantize_tensors([request], spec.granularity)
    body = encode_body(result.quantized, True, result.counts)
    assert body == encode_body(result.quantized, True)
    shifted = np.asarray(result.quantized.codes, np.int64) - result.quantized.code_min
    np.testing.assert_array_equal(decode_codes(body), shifted.ravel())


def _old_package(tmp_path: Path, layout: int, stream: int) -> tuple[bytes, bytes]:
    """A package as the writer before layout 3 made it (layout 1 with QENT v1 streams, or
    layout 2 with v2 streams) and its model."""
    source = _load(models.mlp(sizes=(64, 128, 96, 10)), tmp_path)
    coded = {n: affine(source.array(n), 4) for n in _weights(source)}
    written = rewrite(source, coded)
    bodies = {n: encode_codes(_shifted(q), version=stream) for n, q in coded.items()}
    model_bytes = serialize(written.proto)
    data = pack_layout2(written, coded, bodies, fmt="onnx", version=layout,
                        onnx_sha256=hashlib.sha256(model_bytes).hexdigest(),
                        onnx_size=len(model_bytes))  # fmt: skip
    return data, model_bytes


@pytest.mark.parametrize(("layout", "stream"), [(1, 1), (2, 2), (2, 1)])
def test_packages_of_older_layouts_still_unpack(tmp_path, layout, stream):
    data, model_bytes = _old_package(tmp_path, layout, stream)
    assert struct.unpack_from("<H", data, 8)[0] == layout
    header, start = read_header(data)
    assert data[start + header["tensors"][0]["offset"] + 4] == stream
    assert unpack(data)[1] == model_bytes
    (tmp_path / "old.qpack").write_bytes(data)
    unpack_file(tmp_path / "old.qpack", tmp_path / "old.onnx")
    assert (tmp_path / "old.onnx").read_bytes() == model_bytes
    bad = bytearray(data)
    bad[start + header["tensors"][0]["offset"] + 50] ^= 0x21
    with pytest.raises(InvalidPackageError, match="CRC"):
        unpack(bytes(bad))


def test_packages_are_written_as_version_4(tmp_path):
    data = _package(tmp_path)
    assert struct.unpack_from("<H", data, 8)[0] == 4
    assert data[-4:] == b"QIDX"
    header, start = read_header(data)
    assert start == 0 and header["skeleton"]["kind"] == "cut"
    # model.onnx's pieces hashed with XXH3-128 (version 3: SHA-256)
    model_bytes = unpack(data)[1]
    piece = header["onnx"]["piece_bytes"]
    assert header["onnx"]["piece_xxh3_128"] == [
        xxhash.xxh3_128_hexdigest(model_bytes[at : at + piece])
        for at in range(0, len(model_bytes), piece)
    ]
    first = header["tensors"][0]
    # its entropy stream: QENT v2, or v4 where that is smaller (a small tensor)
    assert data[first["offset"] + 4] in (2, 4)


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_tensors_decoded_on_any_number_of_threads_give_the_same_model(
    tmp_path, threads, monkeypatch
):
    source = _load(models.cnn(), tmp_path)
    coded = {n: codebook(source.array(n), 5) for n in _weights(source)}
    written = rewrite(source, coded)
    data = pack(written, coded, fmt=ModelFormat.ONNX).data
    monkeypatch.setattr(qpack, "UNPACK_THREADS", threads)
    assert unpack(data)[1] == serialize(written.proto)


def test_a_stream_of_the_wrong_length_is_refused(tmp_path):
    source = _load(models.mlp(), tmp_path)
    coded = {n: affine(source.array(n), 3) for n in _weights(source)}
    written = rewrite(source, coded)
    first = next(iter(coded))
    bodies = {n: encode_body(q, True) for n, q in coded.items()}
    bodies[first] = encode_codes(_shifted(coded[first])[:-1])  # one code short
    data = pack(written, coded, fmt=ModelFormat.ONNX, bodies=bodies).data
    with pytest.raises(InvalidPackageError, match="expected"):
        unpack(data)


@pytest.mark.parametrize(
    ("elem_type", "low", "high"),
    [
        (TensorProto.INT4, -8, 7),
        (TensorProto.UINT4, 0, 15),
        (TensorProto.INT4, -3, 2),
        (TensorProto.INT8, -128, 127),
        (TensorProto.INT8, -5, 100),
        (TensorProto.UINT8, 0, 255),
        (TensorProto.UINT8, 17, 40),
        (TensorProto.INT16, -32768, 32767),
        (TensorProto.INT16, -700, 300),
        (TensorProto.UINT16, 1000, 65535),
        (TensorProto.INT32, -70_000, -65_000),
    ],
)
def test_codes_in_narrow_types_store_the_same_raw_data(elem_type, low, high):
    codes = np.random.default_rng(elem_type).integers(low, high + 1, 5001)
    codes[:2] = low, high
    shifted = (codes - low).astype(np.uint8 if high - low < 256 else np.uint16)
    expected = code_raw_data(codes.astype(np.int32), elem_type)
    assert code_raw_data(qpack._codes(shifted, low, elem_type), elem_type) == expected
