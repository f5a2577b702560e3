"""The attribution's staged runs (``quantcore.evaluate.stages``): where a graph is cut, and
that a layer's run from its own stage scores what a run of the whole model scores."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantcore.compress.pipeline import load_model, quantize_model
from quantcore.evaluate import stages
from quantcore.evaluate.attribution import layer_costs
from quantcore.evaluate.synthetic import synthetic_set
from quantcore.spec import QuantSpec
from tests import models


def _weight(rng: np.random.Generator, name: str, rows: int, cols: int) -> onnx.TensorProto:
    w = rng.laplace(0.0, 1.0 / math.sqrt(2.0 * rows), size=(rows, cols)).astype(np.float32)
    return numpy_helper.from_array(w, name)


def siblings() -> onnx.ModelProto:
    """x -> W1 -> a; a -> Wq and a -> Wk (siblings), summed -> W3 -> y; and a second output
    made early (``early``, from ``a``) that the last stage reads too."""
    rng = np.random.default_rng(4)
    inits = [_weight(rng, n, r, c) for n, r, c in
             (("w1", 16, 32), ("wq", 32, 32), ("wk", 32, 32), ("w3", 32, 10), ("we", 32, 4))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a0"]),
        helper.make_node("Relu", ["a0"], ["a"]),
        helper.make_node("MatMul", ["a", "we"], ["early"]),
        helper.make_node("MatMul", ["a", "wq"], ["q"]),
        helper.make_node("MatMul", ["a", "wk"], ["k"]),
        helper.make_node("Mul", ["q", "k"], ["qk"]),
        helper.make_node("Add", ["qk", "a"], ["h"]),
        helper.make_node("MatMul", ["h", "w3"], ["y0"]),
        helper.make_node("ReduceMean", ["early"], ["scale"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["y0", "scale"], ["y"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "siblings", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10]),
         helper.make_tensor_value_info("early", TensorProto.FLOAT, ["n", 4])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _costs(tmp_path, model: onnx.ModelProto) -> dict[str, float]:
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict({"bits": 3, "keep_small": 0}))
    found = synthetic_set(model)
    feeds, _ = next(iter(found.batches(found.batch)))
    costs = layer_costs(path, qmodel.weights, feeds, deadline=math.inf)
    assert costs.measured == costs.total == len(qmodel.weights)
    return {c.name: c.output_sqnr_db for c in costs.costs}


@pytest.mark.parametrize(
    "build",
    [lambda: models.mlp((16, 64, 48, 32, 10), seed=1), models.cnn,
     lambda: models.with_constant_nodes(models.cnn()), siblings],
    ids=["mlp", "cnn", "constant nodes", "siblings and an early output"],
)  # fmt: skip
def test_runs_from_a_stage_score_what_whole_runs_score(tmp_path, monkeypatch, build) -> None:
    model = build()
    names = {t.name for t in model.graph.initializer if len(t.dims) >= 2}
    names |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    assert stages.cuts(model, names), "the model is cut"
    staged = _costs(tmp_path, model)
    monkeypatch.setattr(stages, "MAX_STAGES", 1)  # one stage: the whole model every run
    assert stages.cuts(model, names) == []
    whole = _costs(tmp_path, model)
    assert staged.keys() == whole.keys() and len(set(whole.values())) > 1
    for name, value in whole.items():
        assert staged[name] == pytest.approx(value, abs=1e-3), name


def test_a_cut_never_splits_readers_of_one_value() -> None:
    model = siblings()
    at = stages.cuts(model, {"w1", "wq", "wk", "w3", "we"})
    ops = [(n.op_type, list(n.input)) for n in model.graph.node]
    cut_before = [ops[i][1][1] for i in at]
    # "a" is read by we, wq and wk: a cut before the first of them only; "h" by w3 alone.
    assert cut_before == ["we", "w3"]


def test_a_graph_with_a_subgraph_is_one_stage() -> None:
    model = models.if_model()
    names = {t.name for g in [model.graph] for t in g.initializer}
    assert stages.cuts(model, names) == []


def test_stages_are_spread_over_the_layers(monkeypatch) -> None:
    monkeypatch.setattr(stages, "MAX_STAGES", 4)
    found = list(range(1, 40))
    starts = list(range(40))
    spread = stages._spread(found, starts)
    assert spread == [10, 20, 30]
    assert stages._spread([5, 9], starts) == [5, 9]


@pytest.mark.parametrize("build", [siblings, models.cnn])
def test_live_values_at_every_node_are_those_made_before_and_read_after(build) -> None:
    """One pass gives, at each node, the activations made before it (or fed) and read from it
    on, in the order made: a value never read (``unread``) nor any fixed one is ever carried."""
    model = build()
    model.graph.node.append(helper.make_node("Neg", ["x"], ["unread"]))
    nodes, graph = list(model.graph.node), model.graph
    fixed = stages._fixed(graph, {t.name for t in graph.initializer})
    last_use = stages._last_uses(nodes)
    points = list(range(len(nodes) + 1))
    found = stages._live(nodes, graph, points, fixed, last_use)
    for at, live in zip(points, found, strict=True):
        made = [i.name for i in graph.input] + [o for n in nodes[:at] for o in n.output]
        want = [n for n in dict.fromkeys(made) if n not in fixed and last_use.get(n, -1) >= at]
        assert live == want, at
    assert any(found) and not any("unread" in live for live in found)
