"""Reading an ONNX model and finding every tensor in it, wherever it lives.

Tensors are found in initializers, in the ``value`` of ``Constant`` nodes and in the
subgraphs of ``If``/``Loop``/``Scan`` (and any other graph attribute) at any depth. Each
takes its role from its consumers, followed through layout operators
(``quantcore.formats.onnx_uses``). The graph
is parsed without its external data; external tensors are read on demand, one at a time, from
validated paths inside the model's folder (see ``quantcore.formats.external``), so that a
model is never held twice. The main graph's large initializers are read the same way from the
model file itself: it is parsed without their bytes (``onnx_wire.skeleton``) and each is mapped
from the file when it is read, so that reading a model copies none of its weights.

Bad input raises a domain error: ``InvalidModelError`` for a file that is not ONNX or is
truncated (a value used but never defined), ``UnsupportedModelError`` for an opset or an
operator this service cannot handle, ``UnsafeExternalDataError`` for external data that is
missing or escapes the folder.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from quantcore.errors import InvalidModelError, UnsupportedModelError
from quantcore.formats.external import (
    ModelFile,
    external_info,
    is_external,
    read_external,
    stored_in,
)
from quantcore.formats.model import ModelFormat, WeightTensor
from quantcore.formats.onnx_sizes import check_tensor_sizes, declared_bytes
from quantcore.formats.onnx_uses import Uses
from quantcore.formats.onnx_wire import skeleton
from quantcore.formats.roles import assign
from quantcore.limits import InputLimits

MIN_OPSET = 7
# Domains whose operators onnxruntime's CPU provider implements.
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_FOUR_BIT = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4})
# Initializers of at least this many bytes are read in place from the model file;
# smaller ones cost less to parse than to look up.
MAPPED_MIN_BYTES = 1 << 16


@dataclass(frozen=True, kw_only=True)
class TensorSource:
    """Where one tensor's data lives: the graph, and the initializer or ``Constant`` node."""

    graph_path: str
    value_name: str  # the name the graph uses (``WeightTensor.name`` may be qualified)
    tensor: onnx.TensorProto
    node: onnx.NodeProto | None  # the Constant node, if the tensor is its value


def np_dtype(elem_type: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        raise UnsupportedModelError(f"tensor element type {elem_type} is not supported") from None


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    count = math.prod(int(d) for d in tensor.dims)  # Python integers: no int64 wrap
    if tensor.data_type in _FOUR_BIT:
        return (count + 1) // 2
    return count * np_dtype(tensor.data_type).itemsize


class OnnxModel:
    """A parsed ONNX model and the tensors found in it."""

    format = ModelFormat.ONNX

    def __init__(
        self, path: Path, proto: onnx.ModelProto, model_file: ModelFile | None = None
    ) -> None:
        self.path = path
        self.proto = proto
        # The open file, where ``proto`` was parsed without its large initializers' bytes.
        self.model_file = model_file
        self.opset = default_opset(proto)
        self.sources: dict[str, TensorSource] = {}
        self.tensors = tuple(self._find_tensors())

    def array(self, name: str, *, aligned: bool = True) -> np.ndarray:
        """The values of tensor ``name`` in their stored dtype (external data read safely);
        ``aligned=False``: where the file holds them off their item size, a view of them
        there rather than an aligned copy (for a reader that takes a sample)."""
        return self.values(self.sources[name].tensor, aligned=aligned)

    def values(self, tensor: onnx.TensorProto, *, aligned: bool = True) -> np.ndarray:
        """The values of a tensor of this model's graphs."""
        return tensor_array(tensor, self.path.parent, self.model_file, aligned=aligned)

    def stored_bytes(self, tensor: onnx.TensorProto) -> np.ndarray:
        """The bytes of an external tensor (or one read in place), as ``raw_data`` holds them."""
        return read_external(tensor, self.path.parent, tensor_nbytes(tensor), self.model_file)

    def in_model_file(self, tensor: onnx.TensorProto) -> bool:
        """Whether ``tensor`` is read in place from the model file (not external data)."""
        return self.model_file is not None and stored_in(tensor, self.model_file.name)

    def close(self) -> None:
        """Drop the parsed model (and with it every float it holds): protobuf frees a message's
        memory only as a whole. Call it once the quantized model is built; the model cannot be
        read again afterwards."""
        self.proto = onnx.ModelProto()
        self.sources = {}
        if self.model_file is not None:
            self.model_file.close()
            self.model_file = None

    def _find_tensors(self) -> Iterator[WeightTensor]:
        uses = Uses((graph for graph, _ in walk_graphs(self.proto.graph, "graph")), self.values)
        seen: set[str] = set()
        for graph, where in walk_graphs(self.proto.graph, "graph"):
            found: list[tuple[onnx.TensorProto, onnx.NodeProto | None, str]] = [
                (init, None, f"initializer of {where}") for init in graph.initializer
            ]
            for node in graph.node:
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                    value = next((a.t for a in node.attribute if a.name == "value"), None)
                    if value is not None and node.output:
                        found.append((value, node, f"Constant node of {where}"))
            for tensor, node, place in found:
                tensor_name = node.output[0] if node is not None else tensor.name
                name = tensor_name if tensor_name not in seen else f"{where}/{tensor_name}"
                seen.add(name)
                shape = tuple(int(d) for d in tensor.dims)
                assignment = assign(uses.of(tensor_name, shape), shape)
                self.sources[name] = TensorSource(
                    graph_path=where, value_name=tensor_name, tensor=tensor, node=node
                )
                yield WeightTensor(
                    name=name,
                    shape=shape,
                    dtype=dtype_name(tensor.data_type),
                    role=assignment.role,
                    channel_axis=assignment.channel_axis,
                    block_axis=assignment.block_axis,
                    block_trailing=assignment.block_trailing,
                    used_by=assignment.used_by,
                    where=place,
                )


def dtype_name(elem_type: int) -> str:
    """The numpy name of an ONNX element type (``float32``, ``bfloat16``, ``int8``, ...)."""
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        dtype = None
    if dtype is None or dtype.kind == "O":
        try:
            name = str(helper.tensor_dtype_to_string(elem_type))
        except (KeyError, ValueError):
            return f"undefined ({elem_type})"  # not a weight: the selection says why
        return name.removeprefix("TensorProto.").lower()
    return dtype.name


def walk_graphs(graph: onnx.GraphProto, where: str) -> Iterator[tuple[onnx.GraphProto, str]]:
    """``graph`` and every subgraph below it, depth first, with a readable path."""
    yield graph, where
    for index, node in enumerate(graph.node):
        for attr in node.attribute:
            for i, sub in enumerate(subgraphs(attr)):
                yield from walk_graphs(sub, subgraph_path(where, index, node, attr, i))


def subgraphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attr.type == onnx.AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == onnx.AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def subgraph_path(
    where: str, index: int, node: onnx.NodeProto, attr: onnx.AttributeProto, i: int
) -> str:
    """A subgraph's path: unique (the node's index) and readable (its name or type)."""
    suffix = f"[{i}]" if attr.type == onnx.AttributeProto.GRAPHS else ""
    return f"{where}/{index}:{node.name or node.op_type}.{attr.name}{suffix}"


def tensor_array(
    tensor: onnx.TensorProto, base_dir: Path, model_file: ModelFile | None = None, *,
    aligned: bool = True,
) -> np.ndarray:
    """A tensor's values; external data is read from a validated path under ``base_dir``, or
    from ``model_file`` where it names the model itself. Bytes that lie off their item size
    (most of a protobuf's ``raw_data``) are copied unless ``aligned`` is False."""
    shape = tuple(int(d) for d in tensor.dims)
    if is_external(tensor):
        raw = read_external(tensor, base_dir, tensor_nbytes(tensor), model_file)
        if tensor.data_type in _FOUR_BIT:
            return _unpack_four_bit(raw, tensor.data_type, shape)
        values = raw.view(np_dtype(tensor.data_type).newbyteorder("<")).reshape(shape)
        # Bytes at an offset that is not a multiple of the item size are copied: compiled
        # kernels take aligned arrays.
        return values if values.flags.aligned or not aligned else values.copy()
    if tensor.HasField("raw_data") and tensor.data_type not in _FOUR_BIT:
        dtype = np_dtype(tensor.data_type).newbyteorder("<")
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(shape)
    return np.asarray(numpy_helper.to_array(tensor))


def _unpack_four_bit(raw: np.ndarray, elem_type: int, shape: tuple[int, ...]) -> np.ndarray:
    proto = onnx.TensorProto(data_type=elem_type, dims=shape, raw_data=raw.tobytes())
    return np.asarray(numpy_helper.to_array(proto))


def default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    raise InvalidModelError("the model imports no default-domain opset (opset_import is empty)")


def load_onnx(path: Path, limits: InputLimits | None = None) -> OnnxModel:
    """Parse ``path`` (external data left on disk) and check that it can be handled, the
    sizes its tensors declare too (``quantcore.formats.onnx_sizes``, against ``limits``)."""
    try:
        proto, model_file = _parse_in_place(path)
    except Exception as exc:  # protobuf raises several types for bad bytes
        raise InvalidModelError(
            f"{path.name} is not a readable ONNX model (truncated or not ONNX): {exc}"
        ) from None
    try:
        check_structure(proto, path.name)
        check_tensor_sizes(proto, path.name, limits)
        return OnnxModel(path, proto, model_file)
    except BaseException:
        if model_file is not None:
            model_file.close()  # refused: nothing will read from it
        raise


def _parse_in_place(path: Path) -> tuple[onnx.ModelProto, ModelFile | None]:
    """The model in ``path``, its large initializers left in the file (``ModelFile``, the
    file kept open) where that can be done; otherwise parsed whole (a file that is not a
    valid model then raises what a whole parse raises)."""
    file = path.open("rb")
    try:
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            file.close()
            return onnx.ModelProto(), None  # what empty bytes parse to (mmap refuses them)
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            stripped = skeleton(memoryview(mapped), MAPPED_MIN_BYTES, path.name)
            if stripped is not None:
                proto = onnx.ModelProto.FromString(stripped[0])
                if _references_fit(proto, path.name):
                    return proto, ModelFile(path.name, file, size)
        except (InvalidModelError, DecodeError, KeyError, ValueError):
            pass  # the whole parse below says what is wrong (only these: a time limit goes on)
        file.close()
        return onnx.ModelProto.FromString(memoryview(mapped)), None
    except BaseException:
        file.close()
        raise


def read_graph(path: Path) -> onnx.ModelProto:
    """The model in ``path`` with its large initializers left in the file, as external data
    references to it (``location``: the file's name): what a graph walk or an onnxruntime
    session needs (``quantcore.evaluate.runner.session`` with the file's folder), without a
    copy of the weights. Parsed whole where it cannot be read in place."""
    proto, model_file = _parse_in_place(path)
    if model_file is not None:
        model_file.close()  # the references name the file; whoever reads them opens it
    return proto


def _references_fit(proto: onnx.ModelProto, name: str) -> bool:
    """Whether every initializer read in place holds the bytes its dims and type declare: one
    that does not is parsed whole, so that ``check_tensor_sizes`` says so as for any model."""
    return all(
        declared_bytes(tensor) == int(external_info(tensor)["length"])
        for tensor in proto.graph.initializer if stored_in(tensor, name)
    )


def _parse(path: Path) -> onnx.ModelProto:
    """The message in ``path``, parsed from a memory map: reading the file into bytes first
    takes about as long as the parse itself."""
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return onnx.ModelProto()  # what empty bytes parse to (mmap refuses empty files)
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return onnx.ModelProto.FromString(memoryview(mapped))


def external_locations(path: Path) -> tuple[str, ...]:
    """The external data files (``location``, as written) that the ONNX model at ``path``
    names, each once, in order; the file is parsed without its external data."""
    try:
        proto = _parse(path)
    except Exception as exc:  # protobuf raises several types for bad bytes
        raise InvalidModelError(f"{path.name} is not a readable ONNX model: {exc}") from None
    found: dict[str, None] = {}
    for graph, _ in walk_graphs(proto.graph, "graph"):
        tensors = list(graph.initializer) + [
            a.t for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
        ]
        for tensor in tensors:
            if is_external(tensor):
                found[next((e.value for e in tensor.external_data if e.key == "location"),
                           "")] = None  # fmt: skip
    return tuple(found)


def check_structure(model: onnx.ModelProto, label: str) -> None:
    """Refuse what is not a complete model, or uses opsets and operators we cannot handle."""
    if model.ir_version < 3 or not model.HasField("graph") or not model.graph.node:
        raise InvalidModelError(
            f"{label} is not an ONNX model: ir_version={model.ir_version}, "
            f"{len(model.graph.node)} nodes"
        )
    opset = default_opset(model)
    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise UnsupportedModelError(
            f"default-domain {opset=} is not supported: it must be between {MIN_OPSET} and {latest}"
        )
    versions = {o.domain or "": int(o.version) for o in model.opset_import}
    for graph, where in walk_graphs(model.graph, "graph"):
        for node in graph.node:
            if not isinstance(node.op_type, str) or not isinstance(node.domain, str):
                # protobuf hands back bytes for a string field that is not valid UTF-8
                raise InvalidModelError(
                    f"{label}: node {node.name!r} in {where}: its operator's name or domain "
                    "is not valid UTF-8"
                )
            _check_operator(node, versions, where)
    _check_defined(model.graph, set(), label, "graph")


def _check_operator(node: onnx.NodeProto, versions: dict[str, int], where: str) -> None:
    domain = node.domain or ""
    what = (
        f"operator {node.op_type!r} of domain {domain or 'ai.onnx'!r} "
        f"(node {node.name!r} in {where})"
    )
    if domain not in KNOWN_DOMAINS:
        raise UnsupportedModelError(f"{what}: custom domains are not supported")
    if domain == "com.microsoft":
        return
    version = versions.get(domain, versions.get("ai.onnx" if domain == "" else domain, 0))
    try:
        onnx.defs.get_schema(node.op_type, version, domain)
    except onnx.defs.SchemaError:
        raise UnsupportedModelError(f"{what} is not defined in opset {version}") from None


def _check_defined(graph: onnx.GraphProto, outer: set[str], label: str, where: str) -> None:
    defined = set(outer)
    defined.update(i.name for i in graph.input)
    defined.update(i.name for i in graph.initializer)
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                raise InvalidModelError(
                    f"{label}: input {name!r} of node {node.name or node.op_type!r} in {where} "
                    "is never defined (a truncated or corrupt file?)"
                )
        for attr in node.attribute:
            for i, sub in enumerate(subgraphs(attr)):
                _check_defined(sub, defined, label, f"{where}/{node.op_type}.{attr.name}[{i}]")
        defined.update(o for o in node.output if o)
    for output in graph.output:
        if output.name not in defined:
            raise InvalidModelError(
                f"{label}: output {output.name!r} of {where} is never computed "
                "(a truncated or corrupt file?)"
            )
