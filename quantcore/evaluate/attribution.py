"""Which quantized layers cost a model most of its output fidelity: measured, one at a time.

Weight SQNR is about the same for every layer at a given number of bits, yet a few layers
(a first convolution, a projection whose input has a large mean, a layer feeding a softmax)
account for most of the output error. So each layer's cost is measured, not guessed: the float
model is run with that one weight replaced by its dequantized values and every other weight
float, and the output SQNR of that run against the float model's is the layer's score (lower
costs more). The measured weights become graph inputs, fed float or dequantized, and the
graph is cut into stages (``stages.py``) so that a layer's run starts where the layer is first
used, from the float run's values there, and runs only what follows.

Cost: one forward pass per layer, less the stages before it, on one batch of the fidelity
inputs (a chain of blocks: about half a pass a layer), in an order set by a proxy (the
weight's relative quantization error ‖W−Ŵ‖²/‖W‖², largest first: the layer row's weight
SQNR, lowest first, which measured it as the layer was quantized) so that the likeliest
culprits come first; the runs stop at the deadline, and the result says how many of
how many layers were measured. A run goes on each core (of ``threads`` when given), up to
``MAX_RUNS`` at a time, each layer taken in that order, so the layers measured and their
scores are those of one run after another. The measured weights are read into
memory (one float copy of them); the others stay in the model's files, read by onnxruntime as
it builds the stages' sessions. The float run's values where each stage starts are kept (one
batch's activations).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from quantcore.coding.parallel import threads_for
from quantcore.compress.pipeline import CodedWeight
from quantcore.evaluate.scores import sqnr_db
from quantcore.evaluate.stages import Stages
from quantcore.formats.external import ModelFile
from quantcore.formats.onnx_reader import read_graph, tensor_array, walk_graphs

# One run a core at a time, up to MAX_RUNS, each stage's session on the cores left to each run
# (a session may be run from several threads): one small batch keeps a session's own thread
# pool only partly busy, and runs of two threads each on two cores crowd each other (53.4M at
# 4 bits on a Zen 1, the per-layer runs, medians of 3: two runs of two threads 7.2 s, one run
# of two 5.8, two of one 5.7). Each run holds a layer's dequantized weights and one batch's
# activations, hence the cap on a machine of many cores.
MAX_RUNS = 4
METHOD = (
    "each layer quantized alone (the others float) on one batch of the fidelity inputs; "
    "output SQNR against the float model, lowest first"
)


@dataclass(frozen=True, kw_only=True)
class LayerCost:
    name: str
    output_sqnr_db: float  # the model's output SQNR with only this layer quantized

    def to_dict(self) -> dict[str, object]:
        value = self.output_sqnr_db
        return {"name": self.name, "output_sqnr_db": value if math.isfinite(value) else None}


@dataclass(frozen=True, kw_only=True)
class Attribution:
    costs: tuple[LayerCost, ...]  # lowest output SQNR first
    measured: int
    total: int
    seconds: float

    def block(self, top: int) -> dict[str, object]:
        return {
            "method": METHOD,
            "measured": self.measured,
            "of": self.total,
            "seconds": round(self.seconds, 3),
            "costliest": [c.to_dict() for c in self.costs[:top]],
        }


def _as_inputs(
    proto: onnx.ModelProto, names: set[str], folder: Path, model_file: ModelFile
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``proto`` with the tensors ``names`` (initializers or Constant values, at any depth)
    turned into main-graph inputs, and their float values: external data read from
    ``model_file`` (the model itself, a link or not) or from ``folder`` by ``tensor_array``,
    not by onnx's loader, which refuses a file with several hard links (a worker's inputs,
    linked from storage)."""
    values: dict[str, np.ndarray] = {}
    for graph, _ in walk_graphs(proto.graph, "graph"):
        kept = []
        for init in graph.initializer:
            if init.name in names and init.name not in values:
                values[init.name] = tensor_array(init, folder, model_file)
            else:
                kept.append(init)
        if len(kept) != len(graph.initializer):
            del graph.initializer[:]
            graph.initializer.extend(kept)
        nodes = []
        for node in graph.node:
            out = node.output[0] if node.output else ""
            if node.op_type == "Constant" and out in names and out not in values:
                tensor = next((a.t for a in node.attribute if a.name == "value"), None)
                if tensor is not None:
                    values[out] = tensor_array(tensor, folder, model_file)
                    continue
            nodes.append(node)
        if len(nodes) != len(graph.node):
            del graph.node[:]
            graph.node.extend(nodes)
    inputs = {i.name for i in proto.graph.input}
    for name, array in values.items():
        if name in inputs:
            continue
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        proto.graph.input.append(helper.make_tensor_value_info(name, elem, array.shape))
    return proto, values


@dataclass(frozen=True)
class _Reference:
    """The float run's outputs in float64 and their energy, computed once for every layer."""

    outputs: tuple[np.ndarray, ...]
    signal: float

    @classmethod
    def of(cls, outputs: Sequence[np.ndarray]) -> _Reference:
        flat = tuple(a.astype(np.float64).ravel() for a in outputs)
        signal = 0.0
        for f in flat:
            signal += float(f @ f)
        return cls(outputs=flat, signal=signal)

    def sqnr_db(self, test: Sequence[np.ndarray]) -> float:
        """Pooled output SQNR of ``test`` against the float outputs (non-finite: no signal
        left, ``-inf``)."""
        noise = 0.0
        for f, b in zip(self.outputs, test, strict=True):
            d = np.subtract(f, b.ravel(), dtype=np.float64)
            part = float(d @ d)  # inf or nan where d is not finite, or where it overflows
            noise += part if math.isfinite(part) else math.inf
        return sqnr_db(self.signal, noise)


def _order_key(weight: CodedWeight) -> float:
    """The layer's weight SQNR (lowest first: the largest relative error); a layer without a
    finite one (nothing lost, or nothing to lose) goes last."""
    value = weight.layer.get("sqnr_db")
    return float(value) if isinstance(value, float | int) and math.isfinite(value) else math.inf


def _in_order(
    order: Sequence[str], measure: Callable[[str], LayerCost], deadline: float, workers: int
) -> list[LayerCost]:
    """``measure`` of the names in ``order``, on ``workers`` threads that each take the next
    name until the deadline: what is measured is always the first names of ``order``, in its
    order, as one thread measuring them in turn would have them."""
    results: list[LayerCost | None] = [None] * len(order)
    taken = itertools.count()
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:  # the deadline is checked as a name is taken, as in a plain loop
                i = next(taken) if time.perf_counter() < deadline else len(order)
            if i >= len(order):
                return
            results[i] = measure(order[i])

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for done in [pool.submit(work) for _ in range(max(1, workers))]:
            done.result()
    return [c for c in results if c is not None]


def layer_costs(
    float_model: Path,
    weights: Sequence[CodedWeight],
    feeds: dict[str, np.ndarray],
    *,
    deadline: float,
    threads: int | None = None,
) -> Attribution:
    """Measure the layers of ``weights`` (module docstring) on ``feeds`` until ``deadline``
    (a ``time.perf_counter()`` value), on ``threads`` threads (the cores when None).
    Weights whose graph name is not unique in the model (qualified names of subgraph
    tensors) are not measured."""
    start = time.perf_counter()
    proto = read_graph(float_model)  # the other weights stay in the file for onnxruntime
    coded = {w.name: w for w in weights}
    with float_model.open("rb") as file:
        model_file = ModelFile(float_model.name, file, os.fstat(file.fileno()).st_size)
        proto, floats = _as_inputs(proto, set(coded), float_model.parent, model_file)
    cores = threads_for(threads)
    runs = min(cores, MAX_RUNS)
    stages = Stages.build(proto, float_model, set(floats), cores // runs, feeds, floats)
    del proto  # each stage holds the part of it that it runs
    outputs = [n for n, v in stages.outputs.items() if v.dtype == np.float32]
    reference = _Reference.of([stages.outputs[n] for n in outputs])
    order = sorted(floats, key=lambda n: _order_key(coded[n]))

    def measure(name: str) -> LayerCost:
        quantized = coded[name].dequantized().astype(floats[name].dtype)
        test = stages.run_from(name, {**floats, name: quantized.reshape(floats[name].shape)})
        found = [test[n] for n in outputs] if test is not None else reference.outputs
        return LayerCost(name=name, output_sqnr_db=reference.sqnr_db(found))

    found = _in_order(order, measure, deadline, runs)
    costs = sorted(found, key=lambda c: c.output_sqnr_db)
    return Attribution(
        costs=tuple(costs), measured=len(costs), total=len(coded),
        seconds=time.perf_counter() - start,
    )  # fmt: skip
