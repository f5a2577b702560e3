"""The report's ``model`` block of a quantize job, whose hash is taken while the model is read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantcore import JobInput, JobKind, run_job
from quantcore.jobs import quantize as quantize_module
from tests import models


def test_the_model_block_hashes_the_whole_file(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(models.mlp((16, 64, 10)), str(path))
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4})
    block = run_job(job, tmp_path / "out").report["model"]
    assert block["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert list(block) == ["format", "sha256", "size_bytes", "n_tensors", "n_params"]
    assert block["size_bytes"] == path.stat().st_size and block["n_params"] > 16 * 64


def test_a_hash_the_caller_knows_is_taken_as_it_is(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(models.mlp((16, 64, 10)), str(path))
    known = "ab" * 32  # not this file's: the report shows it was not hashed again
    quantize = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4},
                        model_sha256=known)  # fmt: skip
    assert run_job(quantize, tmp_path / "q").report["model"]["sha256"] == known
    sweep = JobInput(kind=JobKind.SWEEP, model_path=path, model_sha256=known,
                     spec={"base": {"bits": 4}, "grid": {"bits": [4, 8]}})  # fmt: skip
    assert run_job(sweep, tmp_path / "s").report["model"]["sha256"] == known


@pytest.mark.parametrize("size", [0, 100, 8192, 3 * 8192 + 17])  # empty; one span; ragged
def test_the_models_hash_read_through_a_mapping_is_its_sha256(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quantize_module, "HASH_SPAN", 8192)  # whole pages, as madvise needs
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(size).bytes(size))
    assert quantize_module._sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
