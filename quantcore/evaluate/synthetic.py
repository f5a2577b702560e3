"""Inputs made up from a model's graph when the caller gave no evaluation set.

Each graph input gets values from its declared type and shape, with a fixed seed:

- float inputs: standard normal noise (the scale of normalised images, audio or features);
  an input consumed through ``Cast`` as indices is treated as an integer one;
- integer inputs: uniform in ``[0, limit)``, the limit guessed from the graph: the rows of
  the table a ``Gather`` looks the input up in (an embedding's vocabulary), else ``LIMIT``;
  an input whose name says it is a mask gets ones; boolean inputs get ``True``;
- dimensions: a fixed one as declared; a symbolic one is ``BATCH`` on axis 0 (and wherever
  the same symbol appears), else the size ``value_info`` gives it, else a small default
  (``SPATIAL`` for the last two axes of a rank-4 input, ``LENGTH`` otherwise). Inputs that
  share a symbol share its size.

``SyntheticSet`` has the interface of ``EvalSet`` that ``evaluate`` uses (``fixed_batch``,
``samples``, ``batches``), so synthetic and caller's inputs go through the same runner. The
values mean nothing to the model's task: scores on them say how far the quantized model's
function moved from the float one's, not how well it does its job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

BATCH = 4
BATCHES = 3
SPATIAL = 64
LENGTH = 32
LIMIT = 256
SEED = 0
_SHAPE_OPS = frozenset({"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})


@dataclass(frozen=True, kw_only=True)
class SyntheticInput:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # axis 0 is the batch when ``batched``
    batched: bool
    limit: int | None  # integers: values in [0, limit); None: floats (or ones, for masks)
    ones: bool = False


@dataclass(frozen=True, kw_only=True)
class SyntheticSet:
    """A few batches made from the graph's inputs (see the module docstring)."""

    inputs: tuple[SyntheticInput, ...]
    batch: int
    free_batch: bool = False  # no input fixes the batch axis's size
    count: int = BATCHES
    seed: int = SEED
    labels: None = None

    @property
    def fixed_batch(self) -> int | None:
        return self.batch if any(i.batched for i in self.inputs) else 1

    @property
    def samples(self) -> int:
        return self.batch * self.count

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], None]]:
        del batch_size  # the set makes batches of its own size (fixed_batch)
        rng = np.random.default_rng(self.seed)
        for _ in range(self.count):
            yield {i.name: _values(i, rng) for i in self.inputs}, None

    def rebatched(self, batch: int, count: int) -> SyntheticSet:
        """The same inputs in ``count`` batches of ``batch`` samples (``batch`` is ignored
        where an input fixes the batch axis's size)."""
        if not self.free_batch:
            return dataclasses.replace(self, count=count)
        inputs = tuple(
            dataclasses.replace(i, shape=(batch, *i.shape[1:])) if i.batched else i
            for i in self.inputs
        )
        return dataclasses.replace(self, inputs=inputs, batch=batch, count=count)

    @property
    def has_float_input(self) -> bool:
        """Whether an input takes float values (not token ids, indices read through a cast,
        or a mask)."""
        return any(i.limit is None and not i.ones and i.dtype.kind == "f" for i in self.inputs)

    def describe(self) -> dict[str, list[int]]:
        """Input name -> the shape of one batch."""
        return {i.name: list(i.shape) for i in self.inputs}


def _values(spec: SyntheticInput, rng: np.random.Generator) -> np.ndarray:
    if spec.ones or spec.dtype == np.bool_:
        return np.ones(spec.shape, spec.dtype)
    if spec.limit is None:
        return rng.standard_normal(spec.shape).astype(spec.dtype)
    return rng.integers(0, spec.limit, size=spec.shape).astype(spec.dtype)


def _value_dims(model: onnx.ModelProto) -> dict[str, int]:
    """Sizes that ``value_info`` (or the outputs) give to a symbol somewhere in the graph."""
    known: dict[str, int] = {}
    for value in (*model.graph.value_info, *model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param and dim.HasField("dim_value") and dim.dim_value > 0:
                known.setdefault(dim.dim_param, dim.dim_value)
    return known


def _lookup_limit(model: onnx.ModelProto, name: str) -> int | None:
    """Rows of the table that ``name`` indexes with ``Gather`` (through shape-only ops)."""
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                tables[node.output[0]] = value
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for slot_name in node.input:
            consumers.setdefault(slot_name, []).append(node)
    frontier, seen = [name], {name}
    while frontier:
        current = frontier.pop()
        for node in consumers.get(current, []):
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == current:
                table = tables.get(node.input[0])
                if table is not None and len(table.dims) >= 1 and table.dims[0] > 0:
                    return int(table.dims[0])
            elif node.op_type in _SHAPE_OPS:
                for out in node.output:
                    if out not in seen:
                        seen.add(out)
                        frontier.append(out)
    return None


def synthetic_set(
    model: onnx.ModelProto, *, spatial: int = SPATIAL, length: int = LENGTH,
    anonymous_batch: bool = False,
) -> SyntheticSet:
    """Inputs for ``model`` as the module docstring describes. A caller whose model rejects
    them retries with others: ``spatial`` replaces the default size of symbolic image axes,
    ``length`` that of the other free axes, and ``anonymous_batch`` gives the first unnamed
    free axis of an input whose first axis is fixed the batch's size (a recurrent state
    ``(layers, batch, hidden)``)."""
    initializers = {t.name for t in model.graph.initializer}
    known = _value_dims(model)
    batch_symbols: set[str] = set()
    fixed_batches: set[int] = set()
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]
    for value in graph_inputs:
        dims = value.type.tensor_type.shape.dim
        if dims and len(dims) >= 1:
            first = dims[0]
            if first.HasField("dim_value") and first.dim_value > 0:
                fixed_batches.add(first.dim_value)
            elif first.dim_param:
                batch_symbols.add(first.dim_param)
    batch = min(fixed_batches) if fixed_batches else BATCH
    inputs = []
    for value in graph_inputs:
        tensor = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        dims = list(tensor.shape.dim)
        shape: list[int] = []
        batched = False
        fixed_first = bool(dims) and dims[0].HasField("dim_value") and dims[0].dim_value > 0
        inner_batch = False
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(dim.dim_value)
                batched = batched or (axis == 0 and dim.dim_value == batch and len(dims) > 1)
            elif dim.dim_param in batch_symbols or (axis == 0 and len(dims) > 1):
                shape.append(batch)
                batched = batched or axis == 0
            elif dim.dim_param in known:
                shape.append(known[dim.dim_param])
            elif len(dims) == 4 and axis >= 2:
                shape.append(spatial)
            elif anonymous_batch and not dim.dim_param and fixed_first and not inner_batch:
                shape.append(batch)
                inner_batch = True  # only the first such axis
            else:
                shape.append(length)
        limit = None
        if dtype.kind in "iu":
            limit = _lookup_limit(model, value.name) or LIMIT
        elif dtype.kind == "f":
            found = _lookup_limit(model, value.name)
            limit = found
        inputs.append(SyntheticInput(
            name=value.name, dtype=dtype, shape=tuple(shape), batched=batched, limit=limit,
            ones="mask" in value.name.lower() and dtype.kind in "iuf",
        ))  # fmt: skip
    return SyntheticSet(inputs=tuple(inputs), batch=batch, free_batch=not fixed_batches)
