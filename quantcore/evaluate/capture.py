"""The inputs of the layers whose weights are quantized, captured by onnxruntime.

For each weight of the main graph that feeds exactly one ``Conv`` (2-D or 1-D), ``MatMul``
(as its right operand, of rank 2) or ``Gemm`` (as ``B``), the node's data input becomes an
extra graph output; the float model then runs on the calibration batches and every batch's
inputs go into that layer's ``Accumulator`` (``quantcore.compress.hessian``: ``H = XᵀX`` and
``Σx``, rows sampled to ``hessian.row_target`` per layer over the whole set; one for all the
layers that read the same input the same way). Weights used
otherwise (several consumers, a ``Gather`` table, a recurrent matrix, a 3-D convolution, a
subgraph's tensor) get a note saying why they are rounded plainly, and so do layers whose
reduction axis is wider than ``max_k`` (the ``K x K`` Hessian, float64, would pass the
memory bound).

Memory: a batch's captured inputs of every layer at once (batches of ``BATCH`` samples), the
Hessians (``8·groups·K²`` bytes each; ``8·groups·K·B`` where only blocks of ``B`` are
summed) and one sampled block of rows per layer at a time.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantcore.compress.hessian import (
    MIN_ROWS_PER_INPUT,
    Accumulator,
    Geometry,
    LayerStats,
    row_target,
    within,
)
from quantcore.evaluate.dataset import EvalSet
from quantcore.evaluate.flat import FlatSet
from quantcore.evaluate.runner import _pad, graph_session
from quantcore.evaluate.synthetic import SyntheticSet
from quantcore.formats.onnx_reader import read_graph

BATCH = 8
OPS = frozenset({"Conv", "MatMul", "Gemm"})


@dataclass(frozen=True, kw_only=True)
class Capture:
    stats: dict[str, LayerStats]  # weight name -> its layer's input statistics
    notes: dict[str, str]  # weight name -> why it has none
    samples: int
    seconds: float


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def geometry(node: onnx.NodeProto, slot: int, shape: tuple[int, ...]) -> Geometry | str:
    """How ``node`` uses a weight of ``shape`` in input ``slot``, or why it cannot say."""
    attrs = _attrs(node)
    if node.op_type == "Conv" and slot == 1 and len(shape) in (3, 4):
        kernel = tuple(shape[2:])
        nd = len(kernel)
        pads = tuple(int(p) for p in attrs.get("pads", [0] * 2 * nd))  # type: ignore[attr-defined]
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        return Geometry(
            op="Conv", rows=shape[0], k=shape[1] * math.prod(kernel),
            groups=int(attrs.get("group", 1)),  # type: ignore[call-overload]
            kernel=kernel,
            strides=tuple(int(s) for s in attrs.get("strides", [1] * nd)),  # type: ignore[attr-defined]
            pads=pads,
            dilations=tuple(int(d) for d in attrs.get("dilations", [1] * nd)),  # type: ignore[attr-defined]
            auto_pad=auto,
        )  # fmt: skip
    if node.op_type == "MatMul" and slot == 1 and len(shape) == 2:
        return Geometry(op="MatMul", rows=shape[1], k=shape[0])
    if node.op_type == "Gemm" and slot == 1 and len(shape) == 2:
        trans_b = bool(attrs.get("transB", 0))
        rows, k = (shape[0], shape[1]) if trans_b else (shape[1], shape[0])
        return Geometry(op="Gemm", rows=rows, k=k, trans_a=bool(attrs.get("transA", 0)),
                        trans_b=trans_b, alpha=float(attrs.get("alpha", 1.0)))  # type: ignore[arg-type]
    what = f"{len(shape)}-D " if node.op_type == "Conv" else ""
    return f"input {slot} of a {what}{node.op_type}: rounded plainly (no calibration)"


def plan_layers(
    proto: onnx.ModelProto, weights: Mapping[str, tuple[str, tuple[int, ...]]], max_k: int
) -> tuple[dict[str, tuple[str, Geometry]], dict[str, str]]:
    """For each weight (name -> its main-graph value name and shape): the input it meets
    and its geometry, or a note."""
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in proto.graph.node:
        for slot, value in enumerate(node.input):
            consumers[value].append((node, slot))
    plans: dict[str, tuple[str, Geometry]] = {}
    notes: dict[str, str] = {}
    for name, (value, shape) in weights.items():
        uses = consumers.get(value, [])
        if len(uses) != 1:
            notes[name] = f"used by {len(uses)} nodes: rounded plainly (no calibration)"
            continue
        node, slot = uses[0]
        found = geometry(node, slot, shape) if node.op_type in OPS else (
            f"input of {node.op_type}: rounded plainly (no calibration)")  # fmt: skip
        if isinstance(found, str):
            notes[name] = found
        elif not within(found, max_k):
            notes[name] = (f"reduction axis of {found.k} inputs (x{found.groups} groups) is "
                           f"wider than {max_k}: rounded plainly (no calibration)")  # fmt: skip
        else:
            plans[name] = (node.input[0], found)
    return plans, notes


def _runs(
    sess: Any, names: list[str], batches: Iterator[tuple[dict[str, np.ndarray], Any]], step: int,
    fixed: int | None, max_samples: int,
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Each batch's samples and ``names``' values, until ``max_samples`` are seen; the next
    batch runs on a thread of its own while the caller sums this one (onnxruntime and the
    sums release the GIL), so a capture takes about the longer of the two, not their sum
    (minilm-l3's: runs 0.28 s, sums 0.52). Two batches' values are held at once."""

    def run(feeds: dict[str, np.ndarray]) -> tuple[int, list[np.ndarray]]:
        n = next(iter(feeds.values())).shape[0] if feeds else step
        if fixed is not None and n < fixed:
            feeds = {k: _pad(v, fixed) for k, v in feeds.items()}
        return n, sess.run(names, feeds)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture") as pool:

        def start_next() -> Future[tuple[int, list[np.ndarray]]] | None:
            batch = next(batches, None)
            return None if batch is None else pool.submit(run, batch[0])

        pending = start_next()
        samples = 0
        while pending is not None:
            n, outputs = pending.result()
            samples += n
            pending = start_next() if samples < max_samples else None
            yield n, outputs
            del outputs


def capture_stats(
    model_path: Path,
    weights: Mapping[str, tuple[str, tuple[int, ...]]],
    inputs: EvalSet | SyntheticSet | FlatSet,
    *,
    max_samples: int,
    max_k: int,
    hessian: bool = True,
    threads: int | None = None,
    blocks: Mapping[str, int] | None = None,
) -> Capture:
    """Statistics of the inputs of ``weights``' layers over at most ``max_samples`` samples
    of ``inputs`` (see the module docstring)."""
    start = time.perf_counter()
    proto = read_graph(model_path)  # the weights stay in the file for onnxruntime to read
    plans, notes = plan_layers(proto, weights, max_k if hessian else 1 << 62)
    if not plans:  # nothing to capture (onnxruntime would return every output for none)
        return Capture(stats={}, notes=notes, samples=0, seconds=time.perf_counter() - start)
    present = {o.name for o in proto.graph.output}
    for value in dict.fromkeys(v for v, _ in plans.values()):
        if value not in present:
            proto.graph.output.append(onnx.ValueInfoProto(name=value))
    sess = graph_session(proto, model_path, threads=threads)
    del proto
    names = list(dict.fromkeys(v for v, _ in plans.values()))
    fixed = inputs.fixed_batch
    step = fixed if fixed is not None else BATCH
    batches = max(1, -(-min(inputs.samples, max_samples) // step))
    # Flat inputs' GPTQ takes any number of rows (``gptq._gptq_flat``); on samples, fewer
    # than MIN_ROWS_PER_INPUT a weight's input leave the layer to plain rounding.
    per_input = 0 if isinstance(inputs, FlatSet) else MIN_ROWS_PER_INPUT
    accumulators = _shared_accumulators(plans, hessian, blocks or {}, batches, per_input)
    # Each shared accumulator once, with the input it sums.
    distinct = {id(a): (plans[n][0], a) for n, a in accumulators.items()}.values()
    samples = 0
    for n, outputs in _runs(sess, names, inputs.batches(step), step, fixed, max_samples):
        values = dict(zip(names, outputs, strict=True))
        for value, accumulator in distinct:
            accumulator.add(values[value])
        del values, outputs
        samples += n
    return Capture(
        stats={n: replace(a.stats, geometry=plans[n][1]) for n, a in accumulators.items()},
        notes=notes, samples=samples, seconds=time.perf_counter() - start,
    )  # fmt: skip


def _shared_accumulators(
    plans: Mapping[str, tuple[str, Geometry]], hessian: bool, blocks: Mapping[str, int],
    batches: int, per_input: int,
) -> dict[str, Accumulator]:
    """Each weight's accumulator, one for all the layers that read the same input the same
    way (its geometry but the output channels, and the blocks it sums): a transformer
    block's Q, K and V projections sample the same rows with the same seed and sum the same
    products, so one sum serves them all, bit for bit (minilm-l3: 3 of its 5 sums over 384
    inputs a block)."""
    shared: dict[tuple[Any, ...], Accumulator] = {}
    found: dict[str, Accumulator] = {}
    for n, (value, g) in plans.items():
        block = blocks.get(n, 0)
        key = (value, replace(g, rows=0), block)
        if key not in shared:
            shared[key] = Accumulator(geometry=g, hessian=hessian, block=block,
                                      max_rows=-(-row_target(g.k, hessian) // batches),
                                      needed_rows=per_input * g.k)
        found[n] = shared[key]
    return found
