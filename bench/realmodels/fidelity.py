"""How close a quantized model's outputs are to the float model's, on the same inputs.

Both models run in onnxruntime on the CPU with the catalog's feeds (stateful models carry
their own state, so the quantized one drifts as it would in use). Three numbers:

- output SQNR in dB, pooled over every scored float output of every step:
  ``10 log10(sum x^2 / sum (x - xq)^2)``; ``inf`` when the outputs are identical, ``-inf``
  when the quantized model produced NaN or infinity where the float one did not;
- argmax agreement over the last axis of the classifier-like outputs (class, character);
- runnable size: the model file plus any external data files it references, i.e. what must
  be shipped to run it (not an entropy-coded package that has to be unpacked first).

The quantizers (our CLI and the peers) live in ``methods`` and are re-exported here.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray

from bench.realmodels.catalog import Feed, ModelEntry
from bench.realmodels.methods import (
    BaselineUnavailable,
    nncf_compress,
    ort_dynamic,
    ort_matmul_nbits,
    quantize_cli,
)

__all__ = [
    "BaselineUnavailable",
    "Fidelity",
    "ModelInfo",
    "argmax_agreement",
    "compare",
    "describe",
    "nncf_compress",
    "ort_dynamic",
    "ort_matmul_nbits",
    "output_sqnr_db",
    "quantize_cli",
    "run",
    "runnable_bytes",
    "session",
]

Outputs = list[dict[str, NDArray[Any]]]  # one dict per step
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE}


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and all its subgraphs (``If`` branches, ``Loop``/``Scan`` bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every stored tensor: initializers and ``Constant`` values, at any depth."""
    for g in _graphs(model.graph):
        yield from g.initializer
        for node in g.node:
            if node.op_type == "Constant":
                yield from (a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What a model file holds: float parameters (anywhere), opset and input signature."""

    float_params: int
    opset: int
    inputs: tuple[tuple[str, tuple[int | str, ...], str], ...]
    ops: tuple[tuple[str, int], ...]  # op type and count, all graphs, most common first


def describe(path: Path) -> ModelInfo:
    model = onnx.load(str(path), load_external_data=False)
    floats = sum(math.prod(t.dims) for t in _tensors(model) if t.data_type in _FLOAT_TYPES)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    stored = {t.name for t in model.graph.initializer}
    inputs = tuple(
        (
            v.name,
            tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim),
            onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),
        )
        for v in model.graph.input
        if v.name not in stored
    )
    ops = Counter(n.op_type for g in _graphs(model.graph) for n in g.node)
    return ModelInfo(float_params=floats, opset=opset, inputs=inputs, ops=tuple(ops.most_common()))


def runnable_bytes(path: Path) -> int:
    """The model file plus every distinct external data file its tensors point to."""
    model = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for t in _tensors(model)
        if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data
        if entry.key == "location"
    }
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in locations)


def session(path: Path, threads: int = 2) -> ort.InferenceSession:
    """A CPU session (quiet: peers' graphs make onnxruntime warn about unused initializers)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _check_feed(sess: ort.InferenceSession, feed: Feed) -> None:
    """Names match the model's inputs and every fixed dimension matches, so a catalog mistake
    reads as such rather than as an onnxruntime shape error deep in the graph."""
    wanted = {i.name: i for i in sess.get_inputs()}
    if set(feed) != set(wanted):
        raise ValueError(f"feed has inputs {sorted(feed)}, model wants {sorted(wanted)}")
    for name, arg in wanted.items():
        shape = feed[name].shape
        if len(arg.shape) != len(shape):
            raise ValueError(f"{name}: rank {len(shape)}, model wants {arg.shape}")
        for want, got in zip(arg.shape, shape, strict=True):
            if isinstance(want, int) and want > 0 and want != got:
                raise ValueError(f"{name}: shape {shape}, model wants {arg.shape}")


def run(sess: ort.InferenceSession, entry: ModelEntry, feeds: Sequence[Feed]) -> Outputs:
    """Every step's outputs by name; ``entry.carry`` outputs become the next step's inputs."""
    names = [o.name for o in sess.get_outputs()]
    out: Outputs = []
    for i, feed in enumerate(feeds):
        step = dict(feed)
        if i > 0:
            for src, dst in entry.carry:
                step[dst] = out[-1][src]
        _check_feed(sess, step)
        out.append(dict(zip(names, sess.run(names, step), strict=True)))
    return out


def _scored(entry: ModelEntry, outputs: Outputs) -> list[str]:
    if entry.scored_outputs:
        return list(entry.scored_outputs)
    return [k for k, v in outputs[0].items() if np.issubdtype(v.dtype, np.floating)]


def output_sqnr_db(entry: ModelEntry, ref: Outputs, test: Outputs) -> float:
    """Pooled output SQNR (module docstring); raises on mismatched output shapes."""
    signal = noise = 0.0
    for r_step, t_step in zip(ref, test, strict=True):
        for name in _scored(entry, ref):
            x = r_step[name].astype(np.float64)
            xq = t_step[name].astype(np.float64)
            if x.shape != xq.shape:
                raise ValueError(f"{name}: shape {xq.shape} != float model's {x.shape}")
            if not np.all(np.isfinite(xq)):
                return -math.inf
            signal += float(np.sum(x * x))
            noise += float(np.sum((x - xq) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def argmax_agreement(entry: ModelEntry, ref: Outputs, test: Outputs) -> float | None:
    """Share of positions whose argmax over the last axis matches; ``None`` when the entry
    has no classifier-like output."""
    if not entry.argmax_outputs:
        return None
    same = total = 0
    for r_step, t_step in zip(ref, test, strict=True):
        for name in entry.argmax_outputs:
            a = np.argmax(r_step[name], axis=-1)
            b = np.argmax(t_step[name], axis=-1)
            same += int(np.sum(a == b))
            total += a.size
    return same / total


@dataclass(frozen=True, kw_only=True)
class Fidelity:
    sqnr_db: float
    argmax_agreement: float | None
    runnable_bytes: int
    float_params_left: int  # float parameters still stored in the quantized model
    run_s: float


def compare(entry: ModelEntry, ref: Outputs, candidate: Path, feeds: Sequence[Feed]) -> Fidelity:
    """Run ``candidate`` on ``feeds`` and score it against the float outputs ``ref``."""
    start = time.perf_counter()
    test = run(session(candidate), entry, feeds)
    return Fidelity(
        sqnr_db=output_sqnr_db(entry, ref, test),
        argmax_agreement=argmax_agreement(entry, ref, test),
        runnable_bytes=runnable_bytes(candidate),
        float_params_left=describe(candidate).float_params,
        run_s=time.perf_counter() - start,
    )
