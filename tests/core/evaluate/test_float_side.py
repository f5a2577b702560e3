"""The float model's side of the synthetic fidelity check, prepared apart from the evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from quantcore import JobInput, JobKind, run_job
from quantcore.evaluate import float_side
from quantcore.evaluate.float_side import prepare
from quantcore.evaluate.runner import evaluate
from tests import models


def _quantized(tmp_path: Path, model: onnx.ModelProto) -> tuple[Path, Path]:
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4})
    run_job(job, tmp_path / "out")
    return path, tmp_path / "out" / "model.onnx"


def test_prepared_outputs_give_the_evaluation_of_both_models(tmp_path) -> None:
    path, quantized = _quantized(tmp_path, models.cnn())
    side = prepare(path, batch_size=256)
    assert side.inputs is not None and side.reason == ""
    cache = side.reference
    assert cache.complete and cache.outputs and len(cache.batches) == side.inputs.count
    fresh = evaluate(path, quantized, side.inputs, batch_size=256)
    reused = evaluate(path, quantized, side.inputs, batch_size=256, reference=cache)
    assert reused.to_dict() == fresh.to_dict()
    assert fresh.to_dict()["output_sqnr_db"] < 60  # 4 bits moved the outputs: a real comparison


class _CountingSession:
    """A session that counts its runs."""

    def __init__(self, sess) -> None:  # type: ignore[no-untyped-def]
        self.sess, self.runs = sess, 0

    def get_outputs(self):  # type: ignore[no-untyped-def]
        return self.sess.get_outputs()

    def run(self, outputs, feeds):  # type: ignore[no-untyped-def]
        self.runs += 1
        return self.sess.run(outputs, feeds)


def test_the_search_s_run_is_the_first_batch_s(tmp_path, monkeypatch) -> None:
    """The run that finds inputs the float model accepts is the reference's first batch: the
    float model runs once a batch, not once more."""
    path, _ = _quantized(tmp_path, models.cnn())
    made: list[_CountingSession] = []
    original = float_side.session

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(_CountingSession(original(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(float_side, "session", counting)
    side = prepare(path, batch_size=256)
    assert side.inputs is not None and len(made) == 1
    assert made[0].runs == side.inputs.count == len(side.reference.batches)


def test_outputs_kept_for_other_names_are_not_used(tmp_path) -> None:
    path, _ = _quantized(tmp_path, models.mlp((16, 32, 10)))
    cache = prepare(path, batch_size=256).reference
    step = cache.step
    assert step is not None and cache.usable(step, list(cache.outputs))
    assert not cache.usable(step, ["another"]) and not cache.usable(step + 1)


def test_a_model_that_rejects_synthetic_inputs_has_no_float_side(tmp_path) -> None:
    model = models.mlp((16, 10))
    model.graph.input[0].type.tensor_type.shape.dim[1].ClearField("dim_value")
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    side = prepare(path, batch_size=256)
    assert side.inputs is None and "rejected" in side.reason and not side.reference.complete


def _windowed_model_with_state() -> onnx.ModelProto:
    """A voice-activity-like model: ``audio`` (batch, samples) must hold one window of 128
    samples, ``state`` (2, batch, 8) has an unnamed batch axis that must match; a MatMul
    weight (4, 8) to quantize."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Reshape", ["audio", "window"], ["frames"]),  # needs samples == 128
        helper.make_node("ReduceMean", ["frames", "last"], ["energy"], keepdims=0),
        helper.make_node("MatMul", ["energy", "weight"], ["hidden"]),
        helper.make_node("Add", ["state", "hidden"], ["next_state"]),  # needs its batch axis
    ]
    inits = [
        numpy_helper.from_array(np.array([0, 4, 32], np.int64), "window"),
        numpy_helper.from_array(np.array([2], np.int64), "last"),
        numpy_helper.from_array(rng.laplace(size=(4, 8)).astype(np.float32), "weight"),
    ]
    audio = helper.make_tensor_value_info("audio", TensorProto.FLOAT, [None, None])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, 8])
    out = helper.make_tensor_value_info("next_state", TensorProto.FLOAT, [2, None, 8])
    graph = helper.make_graph(nodes, "vad", [audio, state], [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_window_length_and_a_state_batch_axis_are_searched_for(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(_windowed_model_with_state(), str(path))
    side = prepare(path, batch_size=256)
    assert side.inputs is not None, side.reason
    assert {i.name: i.shape for i in side.inputs.inputs} == {"audio": (2, 128),
                                                             "state": (2, 2, 8)}
    report = run_job(JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 8}),
                     tmp_path / "out").report  # fmt: skip
    assert report["fidelity"]["inputs"] == "synthetic"
    assert report["fidelity"]["output_sqnr_db"] > 25
