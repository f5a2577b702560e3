"""model.onnx: codes and decode subgraphs that onnxruntime runs, bit exact with ``decode``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
import pytest
from onnx import TensorProto

from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.results import TensorRequest
from quantcore.formats.containers import storage_type
from quantcore.formats.onnx_reader import OnnxModel, load_onnx
from quantcore.formats.onnx_writer import rewrite, save_onnx
from quantcore.quantizers.codes import QuantizedTensor
from quantcore.spec import Granularity, Method, QuantizerSpec, Support
from tests import models
from tests.core.formats.onnx_helpers import affine, codebook, exposing, run, with_weights

RNG = np.random.default_rng(7)


def _load(model: onnx.ModelProto, tmp_path: Path, name: str = "in.onnx") -> OnnxModel:
    path = tmp_path / name
    onnx.save(model, path)
    return load_onnx(path)


def _check(
    source: OnnxModel,
    quantized: dict[str, QuantizedTensor],
    feeds: dict[str, np.ndarray],
    original: onnx.ModelProto | None = None,
) -> onnx.ModelProto:
    """Run the written model: the decoded tensors equal ``dequantized`` exactly (with and
    without graph optimisations) and the outputs equal the float model with them put in."""
    written = rewrite(source, quantized).proto
    onnx.checker.check_model(written, full_check=True)
    values = [source.sources[n].value_name for n in quantized]
    n_out = len(source.proto.graph.output)
    for optimize in (True, False):
        got = run(exposing(written, values), feeds, optimize=optimize)
        for name, value in zip(quantized, got[n_out:], strict=True):
            dtype = source.array(name).dtype
            np.testing.assert_array_equal(value, quantized[name].dequantized.astype(dtype))
    reference = with_weights(
        original or source.proto,
        {source.sources[n].value_name: q.dequantized for n, q in quantized.items()},
    )
    expected = run(reference, feeds)
    for a, b in zip(run(written, feeds), expected, strict=True):
        # float16 models: onnxruntime sums in a different order when a weight is computed
        # rather than constant, so allow a few float16 ulps there.
        tol = 4e-3 if a.dtype == np.float16 else 1e-5
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol / 10)
    return written


def _code_types(proto: onnx.ModelProto) -> dict[str, int]:
    return {i.name: i.data_type for i in proto.graph.initializer if i.name.endswith(".c")}


def _ops(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The main graph's nodes with the decode functions' calls inlined."""
    return list(onnx.inliner.inline_local_functions(proto).graph.node)


X16 = {"x": RNG.normal(size=(5, 16)).astype(np.float32)}


@pytest.mark.parametrize(
    ("opset", "bits", "expected"),
    [
        (21, 3, TensorProto.INT4),
        (17, 5, TensorProto.INT8),
        (17, 12, TensorProto.INT16),
        (21, 12, TensorProto.INT16),
        (13, 8, TensorProto.INT8),
    ],
)
def test_affine_per_tensor_storage_and_exactness(tmp_path, opset, bits, expected):
    source = _load(models.mlp(opset=opset), tmp_path)
    weights = [t.name for t in source.tensors if t.name.endswith("weight")]
    quantized = {n: affine(source.array(n), bits) for n in weights}
    written = _check(source, quantized, X16)
    assert set(_code_types(written).values()) == {expected}
    assert not {n for n in weights} & {i.name for i in written.graph.initializer}
    ops = {n.op_type for n in _ops(written)}
    assert "DequantizeLinear" in ops
    assert ("Cast" in ops) == (expected == TensorProto.INT16 and opset < 21)


@pytest.mark.parametrize("opset", [9, 11, 13, 21])
def test_affine_per_channel_every_opset(tmp_path, opset):
    source = _load(models.mlp(opset=opset), tmp_path)
    quantized = {
        t.name: affine(source.array(t.name), 5, axis=t.channel_axis)
        for t in source.tensors
        if t.name.endswith("weight")
    }
    written = _check(source, quantized, X16)
    ops = {n.op_type for n in _ops(written)}
    # Per-axis DequantizeLinear exists from opset 13; before, Cast -> Mul -> Add.
    assert ("DequantizeLinear" in ops) == (opset >= 13)


@pytest.mark.parametrize(
    ("opset", "bits", "expected"),
    [(21, 4, TensorProto.UINT4), (17, 5, TensorProto.UINT8), (17, 9, TensorProto.UINT16)],
)
def test_codebook_gather(tmp_path, opset, bits, expected):
    source = _load(models.mlp(sizes=(16, 64, 32, 10), opset=opset), tmp_path)
    quantized = {
        n: codebook(source.array(n), bits, scale=0.5) for n in ("fc0.weight", "fc1.weight")
    }
    written = _check(source, quantized, X16)
    assert set(_code_types(written).values()) == {expected}
    assert "Gather" in {n.op_type for n in _ops(written)}


def test_cnn_per_channel_conv(tmp_path):
    source = _load(models.cnn(), tmp_path)
    quantized = {
        t.name: affine(source.array(t.name), 5, axis=t.channel_axis)
        for t in source.tensors
        if t.role == "weight"
    }
    assert set(quantized) == {"conv0.weight", "conv1.weight", "head.weight"}
    _check(source, quantized, {"x": RNG.normal(size=(2, 3, 12, 12)).astype(np.float32)})


def test_constant_nodes_are_replaced(tmp_path):
    source = _load(models.with_constant_nodes(models.mlp()), tmp_path)
    quantized = {n: affine(source.array(n), 3) for n in ("fc0.weight", "fc1.weight")}
    written = _check(source, quantized, X16)
    constants = {n.output[0] for n in written.graph.node if n.op_type == "Constant"}
    assert "fc0.weight" not in constants
    assert "fc2.weight" in constants  # left in float


def test_if_branches_are_quantized_in_place(tmp_path):
    source = _load(models.if_model(), tmp_path)
    quantized = {n: affine(source.array(n), 5) for n in ("then.weight", "else.weight")}
    x = RNG.normal(size=(3, 8)).astype(np.float32)
    # Both branches: positive and negative sums take then and else.
    for feeds in ({"x": np.abs(x)}, {"x": -np.abs(x)}):
        written = rewrite(source, quantized).proto
        reference = with_weights(source.proto, {n: q.dequantized for n, q in quantized.items()})
        np.testing.assert_allclose(run(written, feeds)[0], run(reference, feeds)[0], rtol=1e-5)
    branches = {a.name: a.g for a in written.graph.node[-1].attribute}
    then_inits = {i.name for i in branches["then_branch"].initializer}
    assert "then.weight" not in then_inits and any(n.endswith(".c") for n in then_inits)
    assert next(n.op_type for n in branches["else_branch"].node) == "d1"  # a decode call
    inlined = {a.name: a.g for a in _ops(written)[-1].attribute}
    assert "DequantizeLinear" in [n.op_type for n in inlined["else_branch"].node]


@pytest.mark.parametrize("elem", [TensorProto.FLOAT16, TensorProto.DOUBLE])
def test_float16_and_float64_weights_cast_back(tmp_path, elem):
    source = _load(models.with_dtype(models.mlp(use_matmul=True), elem), tmp_path)
    quantized = {
        n: affine(source.array(n).astype(np.float32), 5) for n in ("fc0.weight", "fc1.weight")
    }
    dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float64
    written = _check(source, quantized, {"x": X16["x"].astype(dtype)})
    assert _ops(written)[0].op_type == "DequantizeLinear"


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("kind", ["affine", "codebook"])
def test_four_bit_codes_convert_an_older_model_to_opset_21(tmp_path, opset, kind):
    source = _load(models.mlp(opset=opset), tmp_path)
    weights = [t.name for t in source.tensors if t.name.endswith("weight")]
    make = (lambda a: affine(a, 3)) if kind == "affine" else (lambda a: codebook(a, 4))
    quantized = {n: make(source.array(n)) for n in weights}
    written = _check(source, quantized, X16)  # decodes bit for bit, runs like the reference
    assert {o.version for o in written.opset_import if o.domain in ("", "ai.onnx")} == {21}
    four_bit = TensorProto.INT4 if kind == "affine" else TensorProto.UINT4
    assert set(_code_types(written).values()) == {four_bit}
    note = rewrite(source, quantized).notes
    assert note == (f"converted from opset {opset} to 21 for 4-bit containers",)


def test_the_conversion_adds_no_shapes_but_keeps_the_models_own(tmp_path):
    """The converter's shape inference fills ``value_info`` (4-9% of a 4-bit real model's
    bytes); only the entries the source model had are written."""
    proto = models.mlp(opset=13)
    hidden = proto.graph.node[1].output[0]
    proto.graph.value_info.append(onnx.helper.make_tensor_value_info(hidden, TensorProto.FLOAT,
                                                                     None))
    source = _load(proto, tmp_path)
    weights = [t.name for t in source.tensors if t.name.endswith("weight")]
    written = _check(source, {n: affine(source.array(n), 3) for n in weights}, X16)
    assert [v.name for v in written.graph.value_info] == [hidden]
    plain = _load(models.mlp(opset=13), tmp_path, "plain.onnx")
    rewritten = rewrite(plain, {n: affine(plain.array(n), 3) for n in weights}).proto
    assert not rewritten.graph.value_info


def test_a_model_the_converter_refuses_keeps_its_opset_and_8_bit_codes(tmp_path, monkeypatch):
    from onnx import version_converter

    def refuse(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        raise RuntimeError("No adapter for op 'Foo'")

    # The converter is robust on every model tried; its refusal is what is tested here.
    monkeypatch.setattr(version_converter, "convert_version", refuse)
    source = _load(models.mlp(opset=13), tmp_path)
    weights = [t.name for t in source.tensors if t.name.endswith("weight")]
    written = rewrite(source, {n: affine(source.array(n), 3) for n in weights})
    assert {o.version for o in written.proto.opset_import if o.domain == ""} == {13}
    assert set(_code_types(written.proto).values()) == {TensorProto.INT8}
    assert "opset 13 kept" in written.notes[0]


def test_shared_weight_is_decoded_once(tmp_path):
    model = models.mlp(sizes=(16, 16, 16), use_matmul=True)
    # Both MatMul nodes read fc0.weight.
    second = next(n for n in model.graph.node if n.input[1:] == ["fc1.weight"])
    second.input[1] = "fc0.weight"
    source = _load(model, tmp_path)
    written = _check(source, {"fc0.weight": affine(source.array("fc0.weight"), 3)}, X16)
    producers = [n for n in written.graph.node if "fc0.weight" in n.output]
    assert len(producers) == 1
    assert sum(list(n.input).count("fc0.weight") for n in written.graph.node) == 2


def test_external_data_kept_tensors_are_inlined(tmp_path):
    model = models.mlp()
    path = models.save_external(model, tmp_path / "m")
    source = load_onnx(path)
    quantized = {"fc0.weight": affine(source.array("fc0.weight"), 4)}
    written = _check(source, quantized, X16, original=model)
    assert all(i.data_location != TensorProto.EXTERNAL for i in written.graph.initializer)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    assert save_onnx(written, out) == (out,)
    assert onnx.load(out).SerializeToString() == written.SerializeToString()


def test_storage_type_is_narrowest():
    assert storage_type(-8, 7, signed=True, opset=21) == TensorProto.INT4
    assert storage_type(-9, 7, signed=True, opset=21) == TensorProto.INT8
    assert storage_type(0, 15, signed=True, opset=21) == TensorProto.UINT4
    assert storage_type(0, 16, signed=False, opset=21) == TensorProto.UINT8
    assert storage_type(-8, 7, signed=True, opset=20) == TensorProto.INT8
    assert storage_type(-32769, 0, signed=True, opset=21) == TensorProto.INT32
    assert storage_type(0, 65535, signed=False, opset=17) == TensorProto.UINT16


@pytest.mark.parametrize(("method", "zero_point"),
                         [(Method.UNIFORM, True), (Method.UNIFORM, False), (Method.MULAW, False)])
@pytest.mark.parametrize("size", [8, 16, 32])
def test_block_scales_broadcast_where_blocks_tile_their_axis(tmp_path, size, method, zero_point):
    """Granularity group: where the blocks tile the reduction axis (or one block holds it),
    the codes are stored with the axis split in two and the scales broadcast over them (no
    index, no Gather); a ragged last block gathers them. Either way bit for bit ``decode``.
    conv0 sums 27 inputs, conv1 72, the head 16."""
    source = _load(models.cnn(opset=21), tmp_path)
    spec = QuantizerSpec(method=method, bits=4, support=Support.MAX_ABS).resolved()
    requests = [TensorRequest(name=t.name, weights=source.array(t.name), quantizer=spec,
                              channel_axis=t.channel_axis, block_axis=t.block_axis,
                              block_trailing=t.block_trailing)
                for t in source.tensors if t.role == "weight"]  # fmt: skip
    results = quantize_tensors(requests, Granularity.GROUP, group_size=size,
                               zero_point=zero_point)  # fmt: skip
    quantized = {r.name: r.quantized for r in results}
    written = _check(source, quantized, {"x": RNG.normal(size=(2, 3, 12, 12)).astype(np.float32)})
    ragged = sum(k > size and k % size != 0 for k in (27, 72, 16))
    nodes = _ops(written)
    codebook = [n for n in nodes if n.op_type == "Gather" and n.input[0].endswith(".l")]
    gathers = [n for n in nodes if n.op_type == "Gather" and n not in codebook]
    assert len(gathers) == ragged * (2 if zero_point else 1)
    assert len(codebook) == (3 if method is Method.MULAW else 0)
    # A ragged tensor's block index is computed (Range / size), not stored.
    assert sum(n.op_type == "Range" for n in nodes) == ragged
    assert not any(i.dims and i.data_type == TensorProto.INT32 for i in written.graph.initializer)
