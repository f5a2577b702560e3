"""What the service checks at submission and the worker checks again before reading: a
dataset against the model's inputs (from the graph alone), and every input's sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from quantcore import (
    InputLimits,
    InputTooLargeError,
    InvalidDatasetError,
    InvalidModelError,
    JobInput,
    JobKind,
    JobLimits,
    QuantError,
    check_dataset_fits,
    run_job,
)
from quantcore.formats.onnx_signature import signature
from tests import bad_files as bf
from tests import models


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(models.mlp(seed=0), path)
    return path


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "eval.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_the_signature_holds_the_graph_inputs_outputs_and_initializer_names(
    model_path: Path,
) -> None:
    full = onnx.load(model_path)
    light = signature(model_path)
    assert list(light.graph.input) == list(full.graph.input)
    assert list(light.graph.output) == list(full.graph.output)
    assert [t.name for t in light.graph.initializer] == [t.name for t in full.graph.initializer]
    assert all(not t.raw_data for t in light.graph.initializer)
    model_path.write_bytes(b"\x0a\xff\xff\xff\xff\xff")  # a length running past the file
    with pytest.raises(InvalidModelError, match="not a readable ONNX model"):
        signature(model_path)


def test_a_dataset_that_fits_passes_and_one_that_does_not_is_named(
    model_path: Path, tmp_path: Path
) -> None:
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    check_dataset_fits(model_path, _npz(tmp_path, x=x, labels=np.arange(8) % 10))
    with pytest.raises(InvalidDatasetError, match="dimension 1 is 15"):
        check_dataset_fits(model_path, _npz(tmp_path, x=x[:, :15]))
    with pytest.raises(InvalidDatasetError, match="dtype int64 does not fit"):
        check_dataset_fits(model_path, _npz(tmp_path, x=np.zeros((8, 16), np.int64)))
    with pytest.raises(InvalidDatasetError, match="labels: 10 is out of range"):
        check_dataset_fits(model_path, _npz(tmp_path, x=x, labels=np.arange(8) + 3))
    with pytest.raises(InvalidDatasetError, match="NaN or infinite"):
        check_dataset_fits(model_path, _npz(tmp_path, x=np.full((8, 16), np.nan, np.float32)))
    weights = tmp_path / "w.npz"
    np.savez(weights, w=np.zeros((4, 4), np.float32))
    with pytest.raises(InvalidDatasetError, match="holds weights only"):
        check_dataset_fits(weights, _npz(tmp_path, x=x))
    claim = tmp_path / "claim.npz"
    claim.write_bytes(bf.claiming_npz())
    with pytest.raises(InputTooLargeError, match="array 'x' declares shape"):
        check_dataset_fits(model_path, claim, InputLimits())


def test_run_job_checks_its_inputs_against_the_job_limits_first(tmp_path: Path) -> None:
    model = tmp_path / "w.npz"
    np.savez(model, w=np.zeros((64, 64), np.float32))
    job = JobInput(kind=JobKind.QUANTIZE, model_path=model, spec={"bits": 4})
    small = JobLimits(inputs=InputLimits(max_array_bytes=64 * 64 * 4 - 1))
    with pytest.raises(InputTooLargeError, match="max_array_bytes"):
        run_job(job, tmp_path / "out", limits=small)
    assert not (tmp_path / "out").exists()
    at = JobLimits(inputs=InputLimits(max_array_bytes=64 * 64 * 4))
    (tmp_path / "out").mkdir()
    assert run_job(job, tmp_path / "out", limits=at).report["summary"]


def test_an_output_folder_where_an_artifact_would_replace_the_input_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(models.mlp((256, 512, 10), seed=0), path)  # its large weights read in place
    before = path.read_bytes()
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4})
    with pytest.raises(QuantError, match=r"holds the job's input 'model\.onnx'"):
        run_job(job, tmp_path)
    assert path.read_bytes() == before
    report = run_job(job, tmp_path / "out").report  # another folder: the job runs
    # The weights read in place are not external data: the original is the file alone.
    assert report["summary"]["original_bytes"] == len(before)
