"""The consumers of each value of an ONNX model, followed through layout operators.

A weight often reaches its operator through operators that only move, cut or relabel its
elements: an exporter slices a PyTorch LSTM's ``weight_ih`` into gates and concatenates
them in ONNX's order, transposes a ``Linear`` weight for ``MatMul``, reshapes or concatenates
kernels. ``Uses.of`` follows a value forward through such chains (any depth, fan-out, into
subgraphs that read it by name from an outer scope) to the first operators that are not
layout operators, and gives each of them as a ``Use`` with the ``Layout`` of the path: the
layout operators passed, the shape the consumer sees and, for each of its axes, the axis of
the original value it comes from (``None`` where that is not simple to say, e.g. after a
``Reshape`` that merges or splits axes).

Layout operators (data input only): ``Identity``, ``Cast``, ``Slice``, ``Split``,
``Concat`` (any input), ``Transpose``, ``Reshape``, ``Squeeze``, ``Unsqueeze``, and
``Gather`` when its indices are a constant; a ``Gather`` with computed indices is a table
lookup, a consumer. A layout operator whose output nobody reads is itself the consumer.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from quantcore.formats.roles import Layout, Use

PASS_THROUGH = frozenset({"Identity", "Cast"})
LAYOUT_OPS = PASS_THROUGH | {
    "Slice",
    "Split",
    "Concat",
    "Transpose",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Gather",
}
_MAX_READ = 4096  # integer constants read for shapes and axes, at most this many elements

Shape = tuple[int, ...]  # -1 for a dimension not known
Axes = tuple[int | None, ...]


@dataclass(frozen=True)
class _Trace:
    """A value reached from the source: its shape (``None``: rank unknown), the source axis
    behind each of its axes (``None``: not known) and the layout operators passed."""

    shape: Shape | None
    axes: Axes | None
    ops: tuple[str, ...]


class Uses:
    """The consumers of every value, over a graph and all its subgraphs (values are found by
    name, so a subgraph reading an outer value counts as a consumer of it)."""

    def __init__(
        self,
        graphs: Iterable[onnx.GraphProto],
        read: Callable[[onnx.TensorProto], np.ndarray],
    ) -> None:
        self._read = read
        self._consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        self._constants: dict[str, onnx.TensorProto | np.ndarray] = {}
        for graph in graphs:
            for init in graph.initializer:
                self._constants[init.name] = init
            for node in graph.node:
                for slot, name in enumerate(node.input):
                    if name:
                        self._consumers[name].append((node, slot))
                if node.op_type == "Constant" and node.output:
                    value = _constant_value(node)
                    if value is not None:
                        self._constants[node.output[0]] = value

    def of(self, name: str, shape: Shape) -> list[Use]:
        """Every consumer of ``name`` past layout operators, nearest first (so the direct
        consumers come before those reached through a path)."""
        found: list[Use] = []
        queue = deque([(name, _Trace(shape, tuple(range(len(shape))), ()))])
        seen = {name}
        while queue:
            value, trace = queue.popleft()
            for node, slot in self._consumers.get(value, []):
                nexts = self._step(node, slot, trace)
                if nexts is None or not any(self._consumers.get(out) for out, _ in nexts):
                    found.append(_use(node, slot, trace))
                    continue
                if node.op_type == "Gather":  # today's rule if nothing past it decides
                    found.append(_use(node, slot, trace, fallback=True))
                for out, after in nexts:
                    if out and out not in seen:
                        seen.add(out)
                        queue.append((out, after))
        return found

    def _step(
        self, node: onnx.NodeProto, slot: int, trace: _Trace
    ) -> list[tuple[str, _Trace]] | None:
        """The outputs of layout node ``node`` fed at ``slot``, or ``None`` for a consumer."""
        op = node.op_type
        if op not in LAYOUT_OPS or node.domain not in ("", "ai.onnx"):
            return None
        if slot != 0 and op != "Concat":
            return None
        if op == "Gather" and _at(node.input, 1) not in self._constants:
            return None
        ops = (*trace.ops, op)
        if trace.shape is None:
            outs: list[tuple[Shape | None, Axes | None]] = [(None, None)] * len(node.output)
        else:
            try:
                outs = self._layouts(node, trace.shape, trace.axes)
            except (IndexError, StopIteration, ValueError):  # axes that do not fit the rank
                outs = [(None, None)] * len(node.output)
        return [
            (out, _Trace(shape, axes if shape is not None else None, ops))
            for out, (shape, axes) in zip(node.output, outs, strict=False)
        ]

    def _layouts(
        self, node: onnx.NodeProto, shape: Shape, axes: Axes | None
    ) -> list[tuple[Shape | None, Axes | None]]:
        op, rank = node.op_type, len(shape)
        attrs = {a.name: a for a in node.attribute}
        if op in PASS_THROUGH:
            return [(shape, axes)]
        if op == "Transpose":
            perm = list(attrs["perm"].ints) if "perm" in attrs else list(range(rank))[::-1]
            if sorted(perm) != list(range(rank)):
                return [(None, None)]
            return [(_pick(shape, perm), _pick(axes, perm) if axes is not None else None)]
        if op in ("Slice", "Split", "Concat"):
            # The rank and every axis stay; sizes along the cut axis (any axis for a Slice)
            # are left unknown, except that cutting cannot grow an axis of size 1.
            cut = _axis(attrs, rank, 0 if op != "Slice" else None)
            out = tuple(
                d if (cut is not None and i != cut) or (d <= 1 and op != "Concat") else -1
                for i, d in enumerate(shape)
            )
            return [(out, axes)] * len(node.output)
        if op == "Gather":
            return [self._gather(node, attrs, shape, axes)]
        if op == "Unsqueeze":
            return [_unsqueeze(shape, axes, self._ints(node, attrs, "axes"))]
        if op == "Squeeze":
            if "axes" not in attrs and not _at(node.input, 1):  # every axis of size 1
                if -1 in shape:
                    return [(None, None)]
                return [_squeeze(shape, axes, [i for i, d in enumerate(shape) if d == 1])]
            return [_squeeze(shape, axes, self._ints(node, attrs, "axes"))]
        return [_reshape(shape, axes, self._ints(node, attrs, "shape"), attrs)]

    def _gather(
        self,
        node: onnx.NodeProto,
        attrs: dict[str, onnx.AttributeProto],
        shape: Shape,
        axes: Axes | None,
    ) -> tuple[Shape | None, Axes | None]:
        axis = _axis(attrs, len(shape), 0)
        if axis is None:
            return None, None
        indices = self._constants[node.input[1]]
        dims = tuple(
            int(d) for d in (indices.shape if isinstance(indices, np.ndarray) else indices.dims)
        )
        # A list of indices picks along the same axis; other index shapes make new axes.
        kept = axes[axis] if axes is not None and len(dims) == 1 else None
        out_axes = (
            None if axes is None else (*axes[:axis], *(kept for _ in dims), *axes[axis + 1 :])
        )
        return (*shape[:axis], *dims, *shape[axis + 1 :]), out_axes

    def _ints(
        self, node: onnx.NodeProto, attrs: dict[str, onnx.AttributeProto], name: str
    ) -> list[int] | None:
        """Attribute ``name`` (older opsets) or the constant second input (newer ones)."""
        if name in attrs:
            return list(attrs[name].ints)
        source = self._constants.get(_at(node.input, 1))
        if isinstance(source, np.ndarray):
            return [int(v) for v in source.reshape(-1)]
        if source is None or source.data_type not in (
            onnx.TensorProto.INT64,
            onnx.TensorProto.INT32,
        ):
            return None
        if int(np.prod(source.dims, dtype=np.int64)) > _MAX_READ:
            return None
        return [int(v) for v in np.asarray(self._read(source)).reshape(-1)]


def _use(
    node: onnx.NodeProto, slot: int, trace: _Trace | None = None, *, fallback: bool = False
) -> Use:
    attrs = {a.name: a for a in node.attribute}
    layout = None
    if trace is not None and trace.ops:
        layout = Layout(ops=trace.ops, shape=trace.shape, axes=trace.axes)
    return Use(
        op_type=node.op_type,
        slot=slot,
        domain=node.domain,
        trans_a=bool(attrs["transA"].i) if "transA" in attrs else False,
        trans_b=bool(attrs["transB"].i) if "transB" in attrs else False,
        layout=layout,
        fallback=fallback,
    )


def _constant_value(node: onnx.NodeProto) -> onnx.TensorProto | np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name == "value_ints":
            return np.asarray(attr.ints, np.int64)
        if attr.name == "value_int":
            return np.asarray(attr.i, np.int64)
    return None


def _at(names: Iterable[str], index: int) -> str:
    listed = list(names)
    return listed[index] if index < len(listed) else ""


def _pick(values: tuple, perm: list[int]) -> tuple:
    return tuple(values[p] for p in perm)


def _axis(attrs: dict[str, onnx.AttributeProto], rank: int, default: int | None) -> int | None:
    if "axis" not in attrs:
        return default
    axis = int(attrs["axis"].i)
    return axis + rank if axis < 0 else axis


def _unsqueeze(
    shape: Shape, axes: Axes | None, added: list[int] | None
) -> tuple[Shape | None, Axes | None]:
    if added is None:
        return None, None
    rank = len(shape) + len(added)
    new = {a + rank if a < 0 else a for a in added}
    dims, src, out_axes = iter(shape), iter(axes or ()), []
    out_shape = []
    for i in range(rank):
        out_shape.append(1 if i in new else next(dims))
        out_axes.append(None if i in new or axes is None else next(src))
    return tuple(out_shape), tuple(out_axes) if axes is not None else None


def _squeeze(
    shape: Shape, axes: Axes | None, removed: list[int] | None
) -> tuple[Shape | None, Axes | None]:
    if removed is None:
        return None, None
    gone = {a + len(shape) if a < 0 else a for a in removed}
    keep = [i for i in range(len(shape)) if i not in gone]
    return _pick(shape, keep), _pick(axes, keep) if axes is not None else None


def _reshape(
    shape: Shape, axes: Axes | None, target: list[int] | None, attrs: dict[str, onnx.AttributeProto]
) -> tuple[Shape | None, Axes | None]:
    """The new shape; axes are kept only when the reshape just adds or drops axes of size 1."""
    if target is None:
        return None, None
    allow_zero = "allowzero" in attrs and attrs["allowzero"].i == 1
    out = [
        shape[i] if d == 0 and not allow_zero and i < len(shape) else d
        for i, d in enumerate(target)
    ]
    if out.count(-1) == 1 and -1 not in shape:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        total = int(np.prod(shape, dtype=np.int64))
        out[out.index(-1)] = total // known if known and total % known == 0 else -1
    kept_in = [i for i, d in enumerate(shape) if d != 1]
    kept_out = [i for i, d in enumerate(out) if d != 1]
    if axes is None or -1 in out or [shape[i] for i in kept_in] != [out[i] for i in kept_out]:
        return tuple(out), None
    source = dict(zip(kept_out, (axes[i] for i in kept_in), strict=True))
    return tuple(out), tuple(source.get(i) for i in range(len(out)))
