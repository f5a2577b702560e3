"""The fidelity check's size budget (``JobLimits.fidelity_max_params``): a model over it,
without an evaluation set, gets the check skipped and the report says so; a set's evaluation
is used whatever the size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from quantcore import JobInput, JobKind, JobLimits, run_job
from tests import models

MLP = (16, 64, 10)  # 16·64 + 64 + 64·10 + 10 = 1738 parameters


def _job(tmp_path: Path, limits: JobLimits, dataset: Path | None = None) -> dict:
    path = tmp_path / "model.onnx"
    onnx.save(models.mlp(MLP), str(path))
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 8},
                   dataset_path=dataset)  # fmt: skip
    return run_job(job, tmp_path / "out", limits=limits).report


def test_a_model_over_the_budget_gets_the_check_skipped_and_said(tmp_path) -> None:
    report = _job(tmp_path, JobLimits(fidelity_max_params=1000))
    block = report["fidelity"]
    assert block["skipped"] == "size_budget" and block["inputs"] is None
    assert block["output_sqnr_db"] is None and block["samples"] == 0
    assert "0.0 M parameters" in block["reason"] and "size budget of 0.001 M" in block["reason"]
    assert report["warnings"] == [block["reason"]]
    assert report["timings"]["fidelity_s"] < 0.05  # no session was made


def test_a_model_at_the_budget_is_checked(tmp_path) -> None:
    report = _job(tmp_path, JobLimits(fidelity_max_params=1738))
    assert report["fidelity"]["inputs"] == "synthetic" and "skipped" not in report["fidelity"]
    assert report["fidelity"]["output_sqnr_db"] > 35 and report["warnings"] == []


def test_with_an_evaluation_set_the_budget_does_not_apply(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    np.savez(tmp_path / "set.npz", x=x)
    report = _job(tmp_path, JobLimits(fidelity_max_params=0), tmp_path / "set.npz")
    assert report["fidelity"]["inputs"] == "dataset"
    assert report["fidelity"]["output_sqnr_db"] == report["accuracy"]["output_sqnr_db"]
