"""The sizes an ONNX model's tensors declare, checked once the file is parsed and before any
tensor is read.

Every tensor the reader would find (initializers and ``Constant`` values, in subgraphs too)
is checked: an element type ONNX defines; no negative dimension; its bytes (dims multiplied
in Python integers, so a product past 2**63 cannot wrap) at most ``max_array_bytes``
(``InputTooLargeError``); inline data that holds exactly what the dims and type need; external
data whose ``offset`` and ``length`` are whole numbers >= 0, ``length`` the tensor's bytes
(``UnsafeExternalDataError``, as when the data is read).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper

from quantcore.errors import InputTooLargeError, InvalidModelError, UnsafeExternalDataError
from quantcore.limits import UNLIMITED, InputLimits, describe_bytes

_FOUR_BIT = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4})
_COMPLEX = frozenset({onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128})
# FP4 packs two values per byte too (onnx >= 1.18).
_FLOAT4 = getattr(onnx.TensorProto, "FLOAT4E2M1", None)
_PACKED = _FOUR_BIT | ({_FLOAT4} if _FLOAT4 is not None else set())


def _graph_tensors(
    graph: onnx.GraphProto, where: str
) -> Iterator[tuple[onnx.TensorProto, str]]:
    for tensor in graph.initializer:
        yield tensor, f"initializer {tensor.name!r} of {where}"
    for index, node in enumerate(graph.node):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and node.op_type == "Constant":
                name = node.output[0] if node.output else node.name
                yield attr.t, f"Constant {name!r} of {where}"
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else (
                list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else [])
            for i, sub in enumerate(subgraphs):
                yield from _graph_tensors(
                    sub, f"{where}/{index}:{node.name or node.op_type}.{attr.name}[{i}]"
                )


def _itemsize(data_type: int) -> int | None:
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, ValueError, TypeError):
        return None
    return None if dtype.kind == "O" else dtype.itemsize


def declared_bytes(tensor: onnx.TensorProto) -> int | None:
    """The bytes a tensor's dims and type declare (None for strings and unknown types)."""
    count = math.prod(int(d) for d in tensor.dims)
    if tensor.data_type in _PACKED:
        return (count + 1) // 2
    itemsize = _itemsize(tensor.data_type)
    return None if itemsize is None else count * itemsize


def _typed_values(tensor: onnx.TensorProto) -> tuple[int, int] | None:
    """(values held, values the dims need) of a tensor stored in a typed field."""
    try:
        field = helper.tensor_dtype_to_field(tensor.data_type)
    except (KeyError, ValueError, TypeError):
        return None
    count = math.prod(int(d) for d in tensor.dims)
    if tensor.data_type in _COMPLEX:
        count *= 2
    elif tensor.data_type in _PACKED:
        count = (count + 1) // 2
    return len(getattr(tensor, field)), count


# Element types this onnx release defines (UNDEFINED is no type).
_DEFINED_TYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def check_tensor(tensor: onnx.TensorProto, where: str, label: str, limits: InputLimits) -> None:
    if tensor.data_type not in _DEFINED_TYPES:
        raise InvalidModelError(
            f"{label}: {where} has element type {tensor.data_type}, which ONNX does not define "
            "(corrupt, or written by a newer ONNX)"
        )
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise InvalidModelError(f"{label}: {where} has dims {dims}: a negative dimension")
    nbytes = declared_bytes(tensor)
    if nbytes is None or tensor.data_type == onnx.TensorProto.STRING:
        return
    if nbytes > limits.max_array_bytes:
        raise InputTooLargeError(
            f"{label}: {where} declares dims {dims} of "
            f"{helper.tensor_dtype_to_string(tensor.data_type)}: {describe_bytes(nbytes)}, "
            f"over the limit of {describe_bytes(limits.max_array_bytes)} (max_array_bytes)",
            details={"tensor": tensor.name, "bytes": nbytes,
                     "limit_bytes": limits.max_array_bytes, "limit": "max_array_bytes"},
        )
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        _check_external(tensor, where, label, nbytes)
    elif tensor.HasField("raw_data"):
        if len(tensor.raw_data) != nbytes:
            raise InvalidModelError(
                f"{label}: {where} holds {len(tensor.raw_data)} bytes of data but dims {dims} "
                f"need {nbytes} (truncated or corrupt)"
            )
    else:
        typed = _typed_values(tensor)
        if typed is not None and typed[0] != typed[1]:
            raise InvalidModelError(
                f"{label}: {where} holds {typed[0]} values but dims {dims} need {typed[1]} "
                "(truncated or corrupt)"
            )


def _check_external(tensor: onnx.TensorProto, where: str, label: str, nbytes: int) -> None:
    info = {entry.key: entry.value for entry in tensor.external_data}
    what = f"{label}: external data of {where}"
    values = {}
    for key in ("offset", "length"):
        text = info.get(key)
        if text is None:
            continue
        try:
            values[key] = int(text)
        except ValueError:
            raise UnsafeExternalDataError(f"{what}: {key}={text!r} is not a number") from None
        if values[key] < 0:
            raise UnsafeExternalDataError(f"{what}: {key}={text} is negative")
    length = values.get("length", nbytes)
    if length != nbytes:
        raise UnsafeExternalDataError(
            f"{what}: length={length} bytes, but the tensor's dims and type need {nbytes}"
        )


def check_tensor_sizes(
    model: onnx.ModelProto, label: str, limits: InputLimits | None = None
) -> None:
    """Check every tensor of ``model`` (module docstring); ``label`` names the file."""
    limits = limits or UNLIMITED
    for tensor, where in _graph_tensors(model.graph, "graph"):
        check_tensor(tensor, where, label, limits)
