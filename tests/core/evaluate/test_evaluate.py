"""``evaluate``: the float and a perturbed copy of a real ONNX model run in onnxruntime."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from quantcore.errors import InvalidDatasetError, InvalidModelError
from quantcore.evaluate import check_dataset, evaluate, evaluate_job, runner
from quantcore.evaluate.runner import EXTERNAL_FOLDER, ReferenceCache, session
from quantcore.evaluate.scores import Tally, topk_hits
from quantcore.evaluate.synthetic import synthetic_set
from quantcore.formats.onnx_reader import read_graph
from tests.models import cnn, mlp, save_external

N_SAMPLES = 203


def _coarse(model: onnx.ModelProto, step: float) -> onnx.ModelProto:
    """The model with every weight rounded to a multiple of ``step`` (a crude quantizer)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        w = numpy_helper.to_array(init)
        init.CopyFrom(
            numpy_helper.from_array((np.round(w / step) * step).astype(w.dtype), init.name)
        )
    return out


def _with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in (*out.graph.input, *out.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    return out


@pytest.fixture(scope="module")
def models() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    fp = mlp((16, 64, 48, 10), seed=3)
    return fp, _coarse(fp, 0.05)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(N_SAMPLES, 16)).astype(np.float32), rng.integers(0, 10, N_SAMPLES)


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.fixture
def dataset(tmp_path, data) -> Path:
    x, labels = data
    path = tmp_path / "eval.npz"
    np.savez(path, x=x, labels=labels)
    return path


def test_metrics_match_a_whole_set_computation(models, data, dataset):
    fp, q = models
    x, labels = data
    report = evaluate(
        fp.SerializeToString(), q.SerializeToString(), check_dataset(fp, dataset), batch_size=17
    )
    a, b = _reference(fp, x), _reference(q, x)
    assert report.samples == N_SAMPLES
    assert report.fp32 is not None and report.quantized is not None
    assert report.fp32.top1 == pytest.approx(np.mean(a.argmax(1) == labels))
    assert report.quantized.top1 == pytest.approx(np.mean(b.argmax(1) == labels))
    top5_ref = np.mean([lab in np.argsort(-row)[:5] for row, lab in zip(a, labels, strict=True)])
    assert report.fp32.top5 == pytest.approx(top5_ref)
    assert report.top1_drop == pytest.approx(report.fp32.top1 - report.quantized.top1)
    agreement = np.mean(a.argmax(1) == b.argmax(1))
    assert 0.8 < agreement < 1.0  # the coarse copy changes some decisions, not most
    assert report.agreement == pytest.approx(agreement)
    sqnr = 10 * np.log10(
        np.sum(a.astype(np.float64) ** 2) / np.sum((a - b).astype(np.float64) ** 2)
    )
    assert report.output_sqnr_db == pytest.approx(sqnr, abs=1e-3)
    as_json = report.to_dict()
    assert set(as_json) == {
        "samples",
        "fp32",
        "quantized",
        "top1_drop",
        "agreement",
        "output_sqnr_db",
    }
    assert set(as_json["fp32"]) == {"top1", "top5"}


def test_identical_models_agree_fully_with_infinite_sqnr(models, dataset, tmp_path):
    fp, _ = models
    path = tmp_path / "fp.onnx"
    onnx.save(fp, path)
    report = evaluate(path, path, check_dataset(path, dataset), batch_size=64)
    assert report.agreement == 1.0
    assert report.top1_drop == 0.0
    assert report.output_sqnr_db == math.inf
    assert report.to_dict()["output_sqnr_db"] is None


def test_without_labels_accuracy_is_null_and_agreement_stays(models, data, tmp_path):
    fp, q = models
    path = tmp_path / "nolabels.npz"
    np.savez(path, x=data[0])
    report = evaluate(
        fp.SerializeToString(), q.SerializeToString(), check_dataset(fp, path), batch_size=50
    ).to_dict()
    assert report["fp32"] is None and report["quantized"] is None and report["top1_drop"] is None
    assert 0.8 < report["agreement"] < 1.0


@pytest.mark.parametrize("fixed", [1, 8])
def test_a_fixed_batch_dimension_gives_the_same_result(models, dataset, fixed):
    fp, q = models
    dynamic = evaluate(
        fp.SerializeToString(), q.SerializeToString(), check_dataset(fp, dataset), batch_size=256
    )
    fp_fixed, q_fixed = _with_batch(fp, fixed), _with_batch(q, fixed)
    evalset = check_dataset(fp_fixed, dataset)
    assert evalset.fixed_batch == fixed
    calls: list[float] = []
    report = evaluate(
        fp_fixed.SerializeToString(),
        q_fixed.SerializeToString(),
        evalset,
        batch_size=256,
        progress=calls.append,
    )
    assert len(calls) == math.ceil(N_SAMPLES / fixed)  # 203 = 25 * 8 + 3: the last is padded
    assert report.samples == N_SAMPLES
    assert report.fp32 == dynamic.fp32 and report.quantized == dynamic.quantized
    assert report.agreement == dynamic.agreement
    assert report.output_sqnr_db == pytest.approx(dynamic.output_sqnr_db, abs=1e-4)


def test_progress_rises_to_one(models, dataset):
    fp, q = models
    calls: list[float] = []
    evaluate(
        fp.SerializeToString(),
        q.SerializeToString(),
        check_dataset(fp, dataset),
        batch_size=64,
        progress=calls.append,
    )
    assert calls == sorted(calls) and calls[-1] == 1.0 and len(calls) == 4


def _two_outputs(w: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["scores"]),
            helper.make_node("Relu", ["scores"], ["features"]),
        ],
        "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_several_outputs_give_sqnr_per_output_by_name(tmp_path):
    w = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x=np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32),
        labels=np.arange(30) % 3,
    )
    fp = _two_outputs(w)
    report = evaluate(
        fp.SerializeToString(),
        _two_outputs(w * 1.01).SerializeToString(),
        check_dataset(fp, path),
        batch_size=7,
    )
    assert isinstance(report.output_sqnr_db, dict)
    assert set(report.output_sqnr_db) == {"scores", "features"}
    # Scaling every weight by 1.01 scales the scores by 1.01: SQNR = -20 log10(0.01) = 40 dB.
    assert report.output_sqnr_db["scores"] == pytest.approx(40.0, abs=1e-3)
    assert report.fp32 is not None and report.fp32.top5 == 1.0  # 3 classes: top-5 is top-3
    assert report.agreement == 1.0


def test_labels_out_of_range_for_a_dynamic_width_are_caught_at_the_first_batch(tmp_path):
    w = np.ones((4, 3), np.float32)
    fp = _two_outputs(w)
    fp.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "C"
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((5, 4), np.float32), labels=np.array([0, 1, 2, 3, 0]))
    evalset = check_dataset(fp, path)
    assert evalset.classes is None
    with pytest.raises(InvalidDatasetError, match="labels: 3 is out of range for a model with 3"):
        evaluate(fp.SerializeToString(), fp.SerializeToString(), evalset, batch_size=8)


def test_topk_hits_counts_ties_in_the_labels_favour():
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    labels = np.array([2, 2, 0])
    assert topk_hits(scores, labels, 1) == 1  # row 0: the tie at 0.5 counts as a hit
    assert topk_hits(scores, labels, 2) == 2  # row 2: one score beats its label
    assert topk_hits(scores, labels, 3) == 3
    assert topk_hits(scores, labels, 9) == 3


def test_memory_stays_bounded_by_the_batch_not_the_set(models, tmp_path):
    fp, q = models
    x = np.random.default_rng(2).normal(size=(100_000, 16)).astype(np.float32)  # 6.4 MB
    path = tmp_path / "big.npz"
    np.savez(path, x=x, labels=np.zeros(len(x), np.int64))
    del x
    evalset = check_dataset(fp, path)
    fp_bytes, q_bytes = fp.SerializeToString(), q.SerializeToString()
    tracemalloc.start()
    evaluate(fp_bytes, q_bytes, evalset, batch_size=256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000, f"peak traced memory {peak} bytes for a 6.4 MB set"


def test_the_job_hook_returns_the_json_accuracy_block(models, dataset, tmp_path):
    fp, q = models
    fp_path, q_path = tmp_path / "fp.onnx", tmp_path / "q.onnx"
    onnx.save(fp, fp_path)
    onnx.save(q, q_path)
    block = evaluate_job(fp_path, q_path, check_dataset(fp_path, dataset), batch_size=100)
    assert block["samples"] == N_SAMPLES
    assert 0.8 < block["agreement"] < 1.0 and block["top1_drop"] is not None
    assert isinstance(block["output_sqnr_db"], float)


def test_a_reference_cache_skips_the_float_model_on_later_evaluations(models, dataset):
    fp, q = models
    evalset = check_dataset(fp, dataset)
    plain = evaluate(fp.SerializeToString(), q.SerializeToString(), evalset, batch_size=64)
    cache = ReferenceCache()
    first = evaluate(fp.SerializeToString(), q.SerializeToString(), evalset, batch_size=64,
                     reference=cache)  # fmt: skip
    assert cache.complete and len(cache.batches) == 4
    # Not a model at all: the float outputs must come from the cache.
    second = evaluate(b"not a model", q.SerializeToString(), evalset, batch_size=64,
                      reference=cache)  # fmt: skip
    assert first == plain and second == plain
    # Another batch size cannot reuse the batches: the float model runs again.
    with pytest.raises(InvalidModelError):
        evaluate(b"not a model", q.SerializeToString(), evalset, batch_size=32, reference=cache)


def test_a_cache_over_its_memory_cap_keeps_nothing_and_stays_correct(models, dataset):
    fp, q = models
    evalset = check_dataset(fp, dataset)
    cache = ReferenceCache(max_bytes=1000)
    report = evaluate(fp.SerializeToString(), q.SerializeToString(), evalset, batch_size=64,
                      reference=cache)  # fmt: skip
    assert cache.overflow and not cache.complete and cache.batches == []
    assert report == evaluate(
        fp.SerializeToString(), q.SerializeToString(), evalset, batch_size=64, reference=cache
    )


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch_size=st.integers(min_value=1, max_value=N_SAMPLES + 5))
def test_the_report_does_not_depend_on_the_batch_size(models, dataset, batch_size):
    fp, q = models
    evalset = check_dataset(fp, dataset)
    reference = evaluate(fp.SerializeToString(), q.SerializeToString(), evalset, batch_size=256)
    report = evaluate(fp.SerializeToString(), q.SerializeToString(), evalset, batch_size=batch_size)
    assert report.fp32 == reference.fp32 and report.quantized == reference.quantized
    assert report.agreement == reference.agreement
    assert report.output_sqnr_db == pytest.approx(reference.output_sqnr_db, abs=1e-6)


@given(
    scores=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 20), st.integers(1, 12)),
        elements=st.floats(-4, 4, width=32),
    ),
    data=st.data(),
)
def test_topk_hits_grow_with_k_and_reach_every_sample(scores, data):
    labels = data.draw(
        hnp.arrays(np.int64, scores.shape[0], elements=st.integers(0, scores.shape[1] - 1))
    )
    hits = [topk_hits(scores, labels, k) for k in range(1, scores.shape[1] + 1)]
    assert hits == sorted(hits) and hits[-1] == scores.shape[0]
    assert hits[0] >= int(np.count_nonzero(scores.argmax(1) == labels))


def test_sessions_do_not_spin_and_give_the_default_sessions_outputs(tmp_path) -> None:
    model = cnn()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    ours = session(path)
    options = ours.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds, _ = next(iter(synthetic_set(model).batches(4)))
    for a, b in zip(ours.run(None, feeds), plain.run(None, feeds), strict=True):
        assert a.shape == b.shape and np.array_equal(a, b) and np.abs(a).max() > 0


@pytest.mark.parametrize(
    "layout", ["one file", "external data", "a file name with spaces and accents"]
)
def test_a_model_file_runs_with_its_weights_read_from_the_file(tmp_path, layout) -> None:
    """A session of a model file is built from its graph with the large initializers left in
    the file (``read_graph``), those of a model with external data too: same outputs as
    onnxruntime's own load of the file."""
    model = mlp((64, 512, 96, 10), seed=5)  # fc1: 128 KiB, read in place; the rest inline
    if layout == "external data":
        path = save_external(model, tmp_path / "ext")
    else:
        path = tmp_path / ("m.onnx" if layout == "one file" else "mon modèle (v2).onnx")
        onnx.save(model, str(path))
    ours = session(path)
    assert ours.get_session_options().get_session_config_entry(EXTERNAL_FOLDER) == str(
        path.parent
    )
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds, _ = next(iter(synthetic_set(model).batches(8)))
    for a, b in zip(ours.run(None, feeds), plain.run(None, feeds), strict=True):
        assert np.array_equal(a, b) and np.abs(a).max() > 0


def test_a_graph_whose_file_onnxruntime_refuses_to_read_gets_its_weights_inline(
    tmp_path, monkeypatch
) -> None:
    """Should onnxruntime refuse to read the model file as external data (``onnx`` already
    refuses a file with several hard links), ``graph_session`` puts the weights the graph left
    there back into it: the same outputs."""
    model = mlp((64, 512, 96, 10), seed=5)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    real = runner._create
    refused = []

    def stricter(source, threads, folder):  # type: ignore[no-untyped-def]
        graph = onnx.load_from_string(source) if isinstance(source, bytes) else None
        if graph is not None and any(t.data_location == 1 for t in graph.graph.initializer):
            refused.append(folder)
            raise InvalidModelError("onnxruntime cannot load the model: external data refused")
        return real(source, threads, folder)

    monkeypatch.setattr(runner, "_create", stricter)
    ours = runner.graph_session(read_graph(path), path)
    assert refused == [tmp_path]
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds, _ = next(iter(synthetic_set(model).batches(8)))
    for a, b in zip(ours.run(None, feeds), plain.run(None, feeds), strict=True):
        assert np.array_equal(a, b) and np.abs(a).max() > 0


def test_a_file_whose_weights_do_not_fit_is_refused_as_onnxruntime_refuses_it(tmp_path) -> None:
    """A weight whose bytes are cut short is not read in place (its bytes do not fit its
    shape); onnxruntime's own load of the file then says what is wrong."""
    model = mlp((64, 512, 10), seed=5)
    init = model.graph.initializer[0]
    init.raw_data = numpy_helper.to_array(init).tobytes()[:-4]
    path = tmp_path / "short.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(InvalidModelError, match="onnxruntime cannot load the model"):
        session(path)


def test_sessions_keep_onnxruntime_warnings_out_of_the_output(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A model that declares an output batch of 1 but computes 8 makes onnxruntime warn at
    every run; the job's sessions log errors only, so the CLI's terminal stays clean."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feed = {"x": np.ones((8, 4), np.float32)}
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feed
    )
    assert "VerifyOutputSizes" in capfd.readouterr().err  # onnxruntime's default warns
    session(model.SerializeToString()).run(None, feed)
    assert "VerifyOutputSizes" not in capfd.readouterr().err


def test_a_failed_run_is_raised_not_logged(capfd: pytest.CaptureFixture[str]) -> None:
    """A run that fails (here a Reshape to 6 values of an input of 8) raises with its
    message; onnxruntime's default also logs it, the job's sessions do not (the synthetic
    inputs' shape probing meets such failures on purpose)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g", [x],
                              [y], [shape])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feed = {"x": np.ones(8, np.float32)}
    default = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="Reshape"):
        default.run(None, feed)
    assert "[E:onnxruntime" in capfd.readouterr().err
    with pytest.raises(Exception, match="Reshape"):
        session(model.SerializeToString()).run(None, feed)
    assert "onnxruntime" not in capfd.readouterr().err


def test_outputs_that_are_not_finite_are_counted_and_never_raise():
    tally = Tally()
    f = np.ones((2, 3), np.float32)
    tally.add_output("y", f, np.array([[1, np.nan, 1], [np.inf, 1, 1]], np.float32))
    broken = tally.report()
    assert broken.quantized_nonfinite == 2 and broken.float_nonfinite == 0
    assert broken.pooled_sqnr_db == -math.inf and broken.output_sqnr_db == -math.inf
    tally = Tally()
    tally.add_output("y", np.array([[np.inf, 1.0]], np.float32), np.ones((1, 2), np.float32))
    unmeasurable = tally.report()
    assert unmeasurable.float_nonfinite == 1 and math.isnan(unmeasurable.pooled_sqnr_db)


def test_a_quantized_model_run_in_a_few_batches_is_not_optimised_and_scores_the_same(
    tmp_path, monkeypatch
) -> None:
    """Optimising folds a quantized model's decoding into float weights, which costs more than
    decoding at each of a few runs: up to ``FEW_RUNS`` batches the session is unoptimised,
    and the scores are those of the optimised session to float rounding."""
    from quantcore import JobInput, JobKind, run_job

    float_path = tmp_path / "model.onnx"
    onnx.save(mlp((16, 64, 48, 10), seed=3), str(float_path))
    job = JobInput(kind=JobKind.QUANTIZE, model_path=float_path, spec={"bits": 4})
    run_job(job, tmp_path / "out", limits=None)
    quantized = tmp_path / "out" / "model.onnx"
    assert any(f.domain != "" for f in onnx.load(str(quantized)).functions)  # decoded in graph
    x = np.random.default_rng(1).normal(size=(64, 16)).astype(np.float32)
    np.savez(tmp_path / "set.npz", x=x)
    evalset = check_dataset(onnx.load(str(float_path)), tmp_path / "set.npz")
    levels: list[ort.GraphOptimizationLevel] = []
    made = runner.session

    def watched(model, **kwargs):  # type: ignore[no-untyped-def]
        sess = made(model, **kwargs)
        if model == quantized:
            levels.append(sess.get_session_options().graph_optimization_level)
        return sess

    monkeypatch.setattr(runner, "session", watched)
    few = evaluate(float_path, quantized, evalset, batch_size=64 // runner.FEW_RUNS)
    many = evaluate(float_path, quantized, evalset, batch_size=64 // (runner.FEW_RUNS + 1))
    assert levels == [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                      ort.GraphOptimizationLevel.ORT_ENABLE_ALL]  # fmt: skip
    assert 10 < many.output_sqnr_db < 60
    assert few.output_sqnr_db == pytest.approx(many.output_sqnr_db, abs=1e-3)
    assert few.agreement == many.agreement


def _counted_runs(monkeypatch: pytest.MonkeyPatch, quantized: bytes) -> list[int]:
    """The batch sizes of every run of the quantized model's sessions, as they happen."""
    runs: list[int] = []
    made = runner.session

    def watched(model, **kwargs):  # type: ignore[no-untyped-def]
        sess = made(model, **kwargs)
        if model == quantized:
            run = sess.run

            def counted(outputs, feeds, *args):  # type: ignore[no-untyped-def]
                runs.append(next(iter(feeds.values())).shape[0])
                return run(outputs, feeds, *args)

            sess.run = counted
        return sess

    monkeypatch.setattr(runner, "session", watched)
    return runs


def _transposed_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its output's two axes swapped: the batch on axis 1."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    last = graph.output[0]
    graph.node.append(helper.make_node("Transpose", [last.name], ["y_t"], perm=[1, 0]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y_t", TensorProto.FLOAT, None))
    return out


@pytest.mark.parametrize("transposed", [False, True])
def test_a_synthetic_set_is_run_stacked_once_with_the_scores_of_a_run_per_batch(
    models, monkeypatch, transposed
) -> None:
    """An unoptimised session decodes every weight at each run, so the synthetic set's
    batches are run as one where each batch's rows can be told apart in the outputs (every
    output's first axis); the scores are those of a run per batch, bit for bit. An output
    with the batch on another axis gets a run per batch after the stacked one."""
    fp, coarse = (_transposed_output(m) for m in models) if transposed else models
    float_model, quantized = fp.SerializeToString(), coarse.SerializeToString()
    evalset = synthetic_set(fp)
    assert evalset.free_batch and evalset.count == 3
    runs = _counted_runs(monkeypatch, quantized)
    stacked = evaluate(float_model, quantized, evalset, batch_size=256)
    stacked_run = [evalset.batch * evalset.count]
    assert runs == stacked_run + ([evalset.batch] * evalset.count if transposed else [])
    runs.clear()
    monkeypatch.setattr(runner, "_merged_run", lambda *args: None)
    one_by_one = evaluate(float_model, quantized, evalset, batch_size=256)
    assert runs == [evalset.batch] * evalset.count
    assert 10 < stacked.output_sqnr_db < 60
    assert stacked == one_by_one
