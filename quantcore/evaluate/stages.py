"""A model cut into stages, so that a run with one weight changed starts where that weight is
first used: the attribution's per-layer runs (``attribution.py``) then skip the float work
before each layer, about half a forward pass a layer in a model that is a chain of blocks.

The float run goes through every stage and keeps the activations that cross each cut; a
layer's run starts from those of its stage and runs the stages after it, each fed what the
stages before it handed on. Each stage is a session of its own over its nodes and the
initializers they read, so the stages together hold the model's weights once.

A cut is placed before the first node that reads a measured weight, where at most
``MAX_LIVE`` activations cross it and that node's inputs are read by no node before it; at
most ``MAX_STAGES`` stages, spread over the layers. Constant nodes are not activations: a
stage holds a copy of those it reads. A graph is not cut (one stage, the whole model) when a
node holds a subgraph (which may read any outer value), a model output is not made by a node,
or its IR version is under 4 (whose initializers are all graph inputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from quantcore.evaluate.runner import graph_session

MAX_LIVE = 8  # activations crossing a cut: each is fetched from one stage and fed to the next
# Stages at most: each is a session to build and a call in every run after it, which on a
# small model cost more than the work they skip (ocr-cls, 50 cuts: 1.5x the time of none).
MAX_STAGES = 16


@dataclass(frozen=True, kw_only=True)
class Stage:
    session: ort.InferenceSession
    reads: tuple[str, ...]  # the activations it is fed (graph inputs or earlier stages' values)
    weights: frozenset[str]  # the measured weights it reads (graph inputs, fed each run)
    hands_on: tuple[str, ...]  # the values it makes that later stages or the caller read


def cuts(proto: onnx.ModelProto, measured: set[str]) -> list[int]:
    """Indices of ``proto.graph.node`` before which the graph is cut (empty: one stage)."""
    graph = proto.graph
    nodes = list(graph.node)
    made = {out for node in nodes for out in node.output if out}
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in nodes for a in node.attribute):  # fmt: skip
        return []
    if any(o.name not in made for o in graph.output):
        return []
    last_use = _last_uses(nodes)
    fixed = _fixed(graph, measured)
    first_reader: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            first_reader.setdefault(name, i)
    starts = sorted(first_reader[n] for n in measured if n in first_reader)
    found = []
    candidates = sorted(set(starts) - {0})
    for at, live in zip(candidates, _live(nodes, graph, candidates, fixed, last_use),
                        strict=True):  # fmt: skip
        # Not between nodes that read the same value (an attention's Q, K and V projections):
        # onnxruntime fuses those.
        ins = [n for n in nodes[at].input if n in live]
        if len(live) <= MAX_LIVE and all(first_reader[n] >= at for n in ins):
            found.append(at)
    return _spread(found, starts)


def _spread(found: list[int], starts: list[int]) -> list[int]:
    """At most ``MAX_STAGES - 1`` of the cuts ``found``, each the nearest to a quantile of the
    layers' first nodes ``starts``: stages of about as many measured layers each."""
    if len(found) < MAX_STAGES:
        return found
    targets = [starts[round(k * len(starts) / MAX_STAGES)] for k in range(1, MAX_STAGES)]
    return sorted({min(found, key=lambda at: (abs(at - t), at)) for t in targets})


def _fixed(graph: onnx.GraphProto, measured: set[str]) -> set[str]:
    """Values that are not activations: initializers, measured weights, Constant outputs
    (a stage that reads one holds its own copy of the node)."""
    constants = {node.output[0] for node in graph.node if _is_constant(node)}
    return {t.name for t in graph.initializer} | measured | constants


def _is_constant(node: onnx.NodeProto) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1


def _last_uses(nodes: Sequence[onnx.NodeProto]) -> dict[str, int]:
    """Each value's last reader (an index into ``nodes``)."""
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name:
                last[name] = i
    return last


def _live(
    nodes: Sequence[onnx.NodeProto], graph: onnx.GraphProto, points: Sequence[int],
    fixed: set[str], last_use: Mapping[str, int],
) -> list[list[str]]:
    """At each index of ``points`` (ascending), the activations made before that node (or fed
    to the graph) and read from it on, in the order they are made; a model output made before
    the cut and not read after it is not carried: it is taken where it is made. One pass over
    the nodes for every point (a pass a point took 0.1 s on the 672-node ocr-det)."""
    alive: dict[str, None] = {}  # in the order made; a dict keeps it as names leave
    dying: dict[int, list[str]] = {}  # by last reader
    seen: set[str] = set()
    done, gone = 0, -1  # nodes whose outputs are in; last readers whose values are dropped

    def made(name: str) -> None:
        last = last_use.get(name, -1)
        if name and name not in seen and name not in fixed and last >= gone:
            alive[name] = None
            dying.setdefault(last, []).append(name)
        seen.add(name)

    for name in (i.name for i in graph.input):
        made(name)
    found: list[list[str]] = []
    for at in points:
        for node in nodes[done:at]:
            for out in node.output:
                made(out)
        for last in range(gone, at):
            for name in dying.pop(last, ()):
                del alive[name]
        done = gone = at
        found.append(list(alive))
    return found


class Stages:
    """The stages of a model whose measured weights are graph inputs, and the float run's
    values at each stage's start (``build``)."""

    def __init__(self, stages: list[Stage], kept: list[dict[str, np.ndarray]],
                 outputs: dict[str, np.ndarray]) -> None:  # fmt: skip
        self.stages = stages
        self.kept = kept  # per stage, the float values that cross its start
        self.outputs = outputs  # the float run's model outputs
        self.first_stage: dict[str, int] = {}
        for j, stage in enumerate(stages):
            for name in stage.weights:
                self.first_stage.setdefault(name, j)

    @classmethod
    def build(
        cls, proto: onnx.ModelProto, path: Path, measured: set[str], threads: int | None,
        feeds: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
    ) -> Stages:
        """Cut ``proto`` (read from ``path``) and run the float model through its stages,
        building each as the run reaches it (its inputs take the types of what it is fed)."""
        graph = proto.graph
        nodes = list(graph.node)
        outputs = tuple(o.name for o in graph.output)
        fixed = _fixed(graph, measured)
        at = cuts(proto, measured) if proto.ir_version >= 4 else []
        bounds = [0, *at, len(nodes)]
        last_use = _last_uses(nodes)
        live = _live(nodes, graph, at, fixed, last_use)
        values: dict[str, np.ndarray] = dict(feeds)
        stages: list[Stage] = []
        kept: list[dict[str, np.ndarray]] = []
        for j in range(len(bounds) - 1):
            kept.append({name: values[name] for name in (live[j - 1] if j else feeds)})
            if not at:
                stage = _whole(proto, path, measured, threads)
            else:
                stage = _stage(proto, path, measured, threads, nodes[bounds[j] : bounds[j + 1]],
                               bounds[j + 1], values, last_use)  # fmt: skip
            stages.append(stage)
            values.update(_run(stage, values, weights))
        return cls(stages, kept, {name: values[name] for name in outputs})

    def run_from(
        self, name: str, weights: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray] | None:
        """The model's outputs with ``weights`` fed, from the first stage that reads ``name``
        (None: no stage reads it); the stages before it give their float values."""
        start = self.first_stage.get(name)
        if start is None:
            return None
        values = dict(self.kept[start])
        for stage in self.stages[start:]:
            values.update(_run(stage, values, weights))
        return {out: values.get(out, ref) for out, ref in self.outputs.items()}


def _whole(
    proto: onnx.ModelProto, path: Path, measured: set[str], threads: int | None
) -> Stage:
    """The one stage of a graph that is not cut: the model itself."""
    inits = {t.name for t in proto.graph.initializer}
    reads = tuple(i.name for i in proto.graph.input if i.name not in measured | inits)
    hands_on = tuple(o.name for o in proto.graph.output)
    return Stage(session=graph_session(proto, path, threads=threads), reads=reads,
                 weights=frozenset(measured), hands_on=hands_on)  # fmt: skip


def _stage(
    proto: onnx.ModelProto, path: Path, measured: set[str], threads: int | None,
    part: Sequence[onnx.NodeProto], end: int, values: Mapping[str, np.ndarray],
    last_use: Mapping[str, int],
) -> Stage:
    """A session over the nodes ``part`` (which end before node ``end``) and the initializers
    they read; fed the activations and measured weights they read."""
    graph = proto.graph
    made = {out for node in part for out in node.output if out}
    read = {name for node in part for name in node.input if name}
    constants = [node for node in graph.node
                 if _is_constant(node) and node.output[0] in read - made]  # fmt: skip
    part = [*constants, *part]
    made |= {node.output[0] for node in constants}
    inits = [t for t in graph.initializer if t.name in read]
    weights = frozenset(read & measured)
    reads = tuple(sorted(read - made - weights - {t.name for t in inits}))
    model_outputs = {o.name for o in graph.output}
    hands_on = tuple(sorted(n for n in made if last_use.get(n, -1) >= end or n in model_outputs))
    declared = {i.name: i for i in graph.input}
    inputs = [_typed(n, values[n]) for n in reads] + [declared[n] for n in sorted(weights)]
    sub = helper.make_graph(list(part), f"stage before node {end}", inputs,
                            [onnx.ValueInfoProto(name=n) for n in hands_on], inits)  # fmt: skip
    model = helper.make_model(sub, opset_imports=list(proto.opset_import),
                              ir_version=proto.ir_version)  # fmt: skip
    model.functions.extend(proto.functions)
    return Stage(session=graph_session(model, path, threads=threads), reads=reads,
                 weights=weights, hands_on=hands_on)  # fmt: skip


def _run(
    stage: Stage, values: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    feeds = {n: values[n] for n in stage.reads}
    feeds.update((n, weights[n]) for n in stage.weights)
    found = stage.session.run(list(stage.hands_on), feeds)
    return dict(zip(stage.hands_on, found, strict=True))


def _typed(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), None)
