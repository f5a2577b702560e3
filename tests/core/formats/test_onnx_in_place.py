"""A model's large initializers read in place from the mapped file: the skeleton keeps every
other byte, and arrays, written models and errors are those of a whole parse."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantcore import JobInput, JobKind, inspect_model, run_job
from quantcore.compress.pipeline import build_onnx, quantize_model
from quantcore.errors import InvalidModelError, UnsupportedModelError
from quantcore.formats.external import external_info, is_external
from quantcore.formats.onnx_reader import MAPPED_MIN_BYTES, OnnxModel, load_onnx
from quantcore.formats.onnx_wire import skeleton
from quantcore.formats.onnx_writer import serialize
from quantcore.spec import QuantSpec
from tests import models

_BIG = (256, 192)  # 192 KiB of float32: read in place
_SMALL = (16, 8)  # parsed


def _with_large_tensors() -> onnx.ModelProto:
    """Large initializers with and without a ``doc_string``, a small one, and large tensors
    in an ``If`` branch and a ``Constant`` node (those two stay in the parse)."""
    rng = np.random.default_rng(0)
    big = numpy_helper.from_array(rng.standard_normal(_BIG).astype(np.float32), "big")
    noted = numpy_helper.from_array(rng.standard_normal(_BIG[::-1]).astype(np.float32), "noted")
    noted.doc_string = "kept as it is"
    small = numpy_helper.from_array(rng.standard_normal(_SMALL).astype(np.float32), "small")
    branch_weight = numpy_helper.from_array(
        rng.standard_normal(_BIG[::-1]).astype(np.float32), "branch.weight"
    )
    branch = helper.make_graph(
        [helper.make_node("MatMul", ["h", "branch.weight"], ["b"])], "then", [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, _BIG[0]])],
        [branch_weight],
    )  # fmt: skip
    constant = helper.make_node(
        "Constant", [], ["const"],
        value=numpy_helper.from_array(rng.standard_normal(_BIG[::-1]).astype(np.float32)),
    )  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "big"], ["h"]),
        constant,
        helper.make_node("MatMul", ["h", "const"], ["c"]),
        helper.make_node("MatMul", ["c", "noted"], ["n"]),
        helper.make_node("ReduceSum", ["n"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
        helper.make_node("MatMul", ["x", "small_in"], ["z"]),
    ]
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    small_in = numpy_helper.from_array(np.ones((_BIG[0], _SMALL[1]), np.float32), "small_in")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, _BIG[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, _BIG[0]]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, _SMALL[1]])],
        [big, noted, small, zero, small_in],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _restored(proto: onnx.ModelProto, data: bytes, location: str) -> onnx.ModelProto:
    """``proto`` with each reference into ``data`` (``location``) turned back into bytes."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for tensor in out.graph.initializer:
        info = external_info(tensor)
        if is_external(tensor) and info["location"] == location:
            offset, length = int(info["offset"]), int(info["length"])
            del tensor.external_data[:]
            tensor.ClearField("data_location")
            tensor.raw_data = data[offset : offset + length]
    return out


def test_skeleton_replaces_the_main_graphs_large_bytes_and_keeps_every_other_byte():
    data = _with_large_tensors().SerializeToString()
    stripped = skeleton(data, MAPPED_MIN_BYTES, "m.onnx")
    assert stripped is not None
    body, replaced = stripped
    assert replaced == 2  # big and noted; not the branch's, the Constant's or the small ones
    assert len(data) - len(body) > 2 * 4 * _BIG[0] * _BIG[1] - 512  # their bytes are gone
    proto = onnx.ModelProto.FromString(body)
    referenced = [t.name for t in proto.graph.initializer if is_external(t)]
    assert referenced == ["big", "noted"]
    assert next(t for t in proto.graph.initializer if t.name == "noted").doc_string
    assert _restored(proto, data, "m.onnx").SerializeToString() == data
    assert skeleton(data, len(data), "m.onnx") is None  # nothing that large: no skeleton


def test_skeleton_leaves_a_tensor_stored_twice_or_already_external():
    tensor = numpy_helper.from_array(np.ones(_BIG, np.float32), "w")
    twice = tensor.SerializeToString() + TensorProto(raw_data=bytes(8)).SerializeToString()
    external = TensorProto()
    external.CopyFrom(tensor)
    external.external_data.add(key="location", value="w.bin")
    for stored in (twice, external.SerializeToString()):
        graph = onnx.GraphProto(name="g").SerializeToString()
        init = bytes([5 << 3 | 2]) + _varint(len(stored)) + stored
        model = bytes([7 << 3 | 2]) + _varint(len(graph) + len(init)) + graph + init
        assert skeleton(model, MAPPED_MIN_BYTES, "m.onnx") is None


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def test_skeleton_refuses_bytes_that_are_not_protobuf():
    with pytest.raises(InvalidModelError, match="not a valid protobuf"):
        skeleton(b"\x3a\xff\xff\xff\x0f" + bytes(10), MAPPED_MIN_BYTES, "m.onnx")


def _whole(path: Path) -> OnnxModel:
    return OnnxModel(path, onnx.load(str(path)))


@pytest.mark.parametrize("spec", [
    {"bits": 4},
    {"bits": 8, "granularity": "channel", "exclude": ["fc1.weight"]},  # one copied whole
    {"bits": 6, "method": "mulaw", "granularity": "group", "group_size": 32},
])  # fmt: skip
def test_read_in_place_gives_a_whole_parses_arrays_and_written_model(tmp_path, spec):
    path = tmp_path / "m.onnx"
    onnx.save(models.mlp((256, 512, 384, 10), use_matmul=True), path)
    in_place, whole = load_onnx(path), _whole(path)
    assert in_place.model_file is not None and whole.model_file is None
    mapped = [s.value_name for s in in_place.sources.values() if in_place.in_model_file(s.tensor)]
    assert mapped == ["fc0.weight", "fc1.weight"]  # fc2.weight (15 KiB) is parsed
    for tensor in whole.tensors:
        assert np.array_equal(in_place.array(tensor.name), whole.array(tensor.name))
        assert in_place.array(tensor.name).flags.aligned
    quant_spec = QuantSpec.from_dict(spec)
    written = [serialize(build_onnx(quantize_model(m, quant_spec)).proto)
               for m in (in_place, whole)]  # fmt: skip
    assert written[0] == written[1]


def test_tensors_at_unaligned_offsets_are_copied_aligned(tmp_path):
    offsets = set()
    for pad in range(4):  # each character of the producer's name moves the bytes by one
        model = models.mlp((256, 512, 10), use_matmul=True)
        model.producer_name = "x" * pad
        path = tmp_path / f"m{pad}.onnx"
        onnx.save(model, path)
        loaded = load_onnx(path)
        tensor = loaded.sources["fc0.weight"].tensor
        offset = int(external_info(tensor)["offset"]) % 4
        offsets.add(offset)
        values = loaded.array("fc0.weight")
        assert values.flags.aligned
        assert np.array_equal(values, _whole(path).array("fc0.weight"))
        # A sampling reader may take the bytes where they lie: a view of the mapping, no copy.
        in_place = loaded.array("fc0.weight", aligned=False)
        assert in_place.flags.aligned == (offset == 0)
        assert not in_place.flags.owndata and not in_place.flags.writeable
        assert np.array_equal(in_place, values)
    assert offsets == {0, 1, 2, 3}


def test_a_model_behind_a_symbolic_link_is_read_in_place(tmp_path):
    target = tmp_path / "blobs" / "3f2a"
    target.parent.mkdir()
    onnx.save(models.mlp((256, 512, 10)), target)
    link = tmp_path / "model.onnx"
    link.symlink_to(target)  # as a model hub's cache keeps its files
    model = load_onnx(link)
    assert model.model_file is not None
    assert np.array_equal(model.array("fc0.weight"), _whole(target).array("fc0.weight"))


def test_a_large_tensor_shorter_than_its_dims_is_reported_as_by_a_whole_parse(tmp_path):
    short = numpy_helper.from_array(np.ones((256, 128), np.float32), "w")
    short.raw_data = bytes(MAPPED_MIN_BYTES)  # half of what (256, 128) float32 needs
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])], [short],
    )  # fmt: skip
    path = tmp_path / "short.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(InvalidModelError, match="holds 65536 bytes of data but dims"):
        load_onnx(path)


def test_arrays_read_in_place_outlive_the_closed_model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(models.mlp((256, 512, 10)), path)
    model = load_onnx(path)
    assert model.model_file is not None
    file = model.model_file.file
    values = model.array("fc0.weight")
    expected = _whole(path).array("fc0.weight")
    model.close()
    assert file.closed  # no descriptor left open by a closed model
    assert np.array_equal(values, expected)  # its own mapping, still readable


def test_inspecting_and_quantizing_leave_no_file_open(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(models.mlp((256, 512, 10)), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        inspect_model(path)
        run_job(JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4}),
                tmp_path / "out")  # fmt: skip
        gc.collect()  # an unclosed file warns as it is collected
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_refused_model_leaves_no_file_open(tmp_path):
    model = models.mlp((256, 512, 10))
    model.graph.node[0].op_type = "NoSuchOperator"
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(UnsupportedModelError):
            load_onnx(path)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_graph_field_of_another_wire_type_is_left_to_the_whole_parse(tmp_path):
    data = _with_large_tensors().SerializeToString()
    odd = bytes([7 << 3 | 0, 5]) + data  # field 7 (the graph) as a varint first
    stripped = skeleton(odd, MAPPED_MIN_BYTES, "m.onnx")
    assert stripped is not None and stripped[0][:2] == odd[:2] and stripped[1] == 2
    path = tmp_path / "odd.onnx"
    path.write_bytes(odd)
    in_place, whole = load_onnx(path), _whole(path)  # protobuf keeps it as an unknown field
    assert in_place.model_file is not None
    for name in ("big", "noted"):
        assert np.array_equal(in_place.array(name), whole.array(name))
