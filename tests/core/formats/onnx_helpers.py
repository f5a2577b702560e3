"""Helpers shared by the ONNX tests: running models and making hand-built quantizations."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from quantcore.quantizers.codes import AffineDecoder, CodebookDecoder, QuantizedTensor, decode


def session(model: onnx.ModelProto, *, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], **kw: bool) -> list[np.ndarray]:
    return session(model, **kw).run(None, feeds)


def exposing(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose top-level graph also outputs the values ``names``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name in names:
        out.graph.output.append(helper.ValueInfoProto(name=name))
    return out


def affine(weights: np.ndarray, bits: int, axis: int | None = None) -> QuantizedTensor:
    """A midrise uniform quantizer by hand: codes in [-2**(b-1), 2**(b-1)-1], offset = mean +
    half a step (so the offset is not zero and the ``Add`` is exercised)."""
    w = np.asarray(weights, np.float32)
    half = 1 << (bits - 1)
    if axis is None:
        mean = np.float32(w.mean())
        step = np.float32(max(float(np.abs(w - mean).max()), 1e-8) / half)
    else:
        other = tuple(i for i in range(w.ndim) if i != axis)
        mean = w.mean(axis=other).astype(np.float32)
        step = np.maximum(np.abs(w - np.expand_dims(mean, other)).max(axis=other), 1e-8) / half
        step = step.astype(np.float32)
    decoder = AffineDecoder(
        scale=np.asarray(step, np.float32),
        offset=np.asarray(mean + step / 2, np.float32),
        axis=axis,
    )
    bshape = [1] * w.ndim
    if axis is not None:
        bshape[axis] = -1
    centred = w - np.reshape(decoder.offset, bshape if axis is not None else ())
    codes = np.clip(
        np.floor(centred / np.reshape(step, bshape if axis is not None else ()) + 0.5),
        -half,
        half - 1,
    ).astype(np.int32)
    return QuantizedTensor(
        codes=codes,
        code_min=-half,
        code_max=half - 1,
        decoder=decoder,
        dequantized=decode(codes, decoder),
    )


def codebook(weights: np.ndarray, bits: int, *, scale: float = 1.0) -> QuantizedTensor:
    """Nearest of ``2**bits`` sorted levels (a quantile codebook), with a scale and offset."""
    w = np.asarray(weights, np.float32)
    n = 1 << bits
    levels = np.quantile(w / scale, (np.arange(n) + 0.5) / n).astype(np.float32)
    codes = np.abs(w[..., None] / scale - levels).argmin(axis=-1).astype(np.int32)
    decoder = CodebookDecoder(
        levels=levels, scale=np.asarray(scale, np.float32), offset=np.asarray(0.01, np.float32)
    )
    return QuantizedTensor(
        codes=codes,
        code_min=0,
        code_max=n - 1,
        decoder=decoder,
        dequantized=decode(codes, decoder),
    )


def with_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of the float ``model`` with the tensors ``weights`` (by value name) put in,
    wherever they live (initializers or ``Constant`` nodes, at any depth)."""
    from onnx import numpy_helper

    from quantcore.formats.onnx_reader import walk_graphs

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for graph, _ in walk_graphs(out.graph, "graph"):
        for init in graph.initializer:
            if init.name in weights:
                arr = weights[init.name].astype(helper.tensor_dtype_to_np_dtype(init.data_type))
                init.CopyFrom(numpy_helper.from_array(arr, init.name))
        for node in graph.node:
            if node.op_type == "Constant" and node.output[0] in weights:
                attr = next(a for a in node.attribute if a.name == "value")
                arr = weights[node.output[0]].astype(
                    helper.tensor_dtype_to_np_dtype(attr.t.data_type)
                )
                attr.t.CopyFrom(numpy_helper.from_array(arr))
    return out
