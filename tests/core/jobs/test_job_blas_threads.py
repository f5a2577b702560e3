"""A job's results do not depend on how many BLAS threads its process runs with
(``quantcore.jobs.run``): OpenBLAS splits a float32 product (the calibration's ``XᵀX``) or a
long dot product (the scores' sums) among its threads and adds the parts, so with a thread a
core they moved with the machine's core count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_info, threadpool_limits

from quantcore import JobInput, JobKind, run_job
from quantcore.limits import JobLimits
from tests.reports import without_timings


def _blas_threads() -> set[int]:
    return {int(pool["num_threads"]) for pool in threadpool_info() if pool["user_api"] == "blas"}


def _model_and_set(folder: Path) -> tuple[Path, Path]:
    """One MatMul of 384 inputs on sequences of 4 (2048 calibration rows from 512 samples:
    enough for GPTQ, and a product long enough for OpenBLAS to split)."""
    rng = np.random.default_rng(3)
    k, n = 384, 64
    weight = numpy_helper.from_array((rng.laplace(size=(k, n)) * 0.1).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path, dataset = folder / "m.onnx", folder / "set.npz"
    onnx.save(model, str(path))
    base = rng.standard_normal((512, 4, k)).astype(np.float32)
    np.savez(dataset, x=(base + 0.8 * base.mean(axis=2, keepdims=True) + 1.5).astype(np.float32))
    return path, dataset


@pytest.mark.parametrize("threads", [2, 4])
def test_a_calibrated_job_is_the_same_whatever_blas_threads_the_process_has(
    tmp_path: Path, threads: int
) -> None:
    model, dataset = _model_and_set(tmp_path)
    job = JobInput(kind=JobKind.QUANTIZE, model_path=model, dataset_path=dataset,
                   spec={"bits": 4, "calibration": "gptq"})  # fmt: skip
    found = {}
    for count in (1, threads):
        with threadpool_limits(limits=count, user_api="blas"):
            out = run_job(job, tmp_path / f"out{count}", limits=JobLimits(calibration_samples=512))
            assert _blas_threads() == {count}  # the process's own setting, back after the job
        folder = tmp_path / f"out{count}"
        found[count] = ((folder / "model.onnx").read_bytes(), (folder / "model.qpack").read_bytes(),
                        without_timings(out.report))  # fmt: skip
    report = found[1][2]
    assert "dB below plain rounding" in report["layers"][0]["notes"][0]  # GPTQ ran
    assert report["accuracy"]["output_sqnr_db"] > 0
    assert found[threads] == found[1]
