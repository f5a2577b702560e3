"""The report's ``model`` block of a quantize job, whose hash is taken while the model is read."""

from __future__ import annotations

import hashlib

import onnx

from quantcore import JobInput, JobKind, run_job
from tests import models


def test_the_model_block_hashes_the_whole_file(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(models.mlp((16, 64, 10)), str(path))
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4})
    block = run_job(job, tmp_path / "out").report["model"]
    assert block["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert list(block) == ["format", "sha256", "size_bytes", "n_tensors", "n_params"]
    assert block["size_bytes"] == path.stat().st_size and block["n_params"] > 16 * 64
