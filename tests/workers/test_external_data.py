"""A model with external data through the service: uploaded with its data file, stored beside
it, placed under the name the model gives it when the worker runs the job; deleted with it."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient

from quantcore import JobInput
from quantcore import run_job as tasks_run_job
from service.settings import Settings
from service.store.artifacts import external_key
from tests.core.compress.test_stream import external_mlp
from tests.core.formats.onnx_helpers import run
from workers import tasks
from workers.tasks import Outcome, WorkerContext, execute_job


def _upload(client: TestClient, model: Path, data: Path | None) -> dict:
    files = {"file": ("big.onnx", model.read_bytes())}
    if data is not None:
        files["external_data"] = ("weights.bin", data.read_bytes())
    response = client.post("/v1/models", files=files)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_model_with_external_data_is_stored_and_quantized_by_a_worker(
    client: TestClient, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = external_mlp(tmp_path / "in")
    data = tmp_path / "in" / "model.onnx.data"
    body = _upload(client, model, data)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (model, data)]
    assert body["sha256"] == hashlib.sha256("+".join(digests).encode()).hexdigest()
    assert body["size_bytes"] == model.stat().st_size + data.stat().st_size
    widths = (256, 1024, 1024, 512, 64)
    assert body["n_params"] == sum(a * b + b for a, b in itertools.pairwise(widths))
    root = Path(settings.storage_path)
    key = f"blobs/{body['sha256']}.onnx"
    assert (root / external_key(key)).read_bytes() == data.read_bytes()
    assert _upload(client, model, data)["id"] == body["id"]  # the same two files: the same model

    job = client.post("/v1/jobs", json={"model_id": body["id"], "spec": {"bits": 4}})
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    # The job reads the stored data file itself, linked into its folder (nothing copied).
    inputs: list[int] = []

    def run_job(job_input: JobInput, *args: Any, **kwargs: Any) -> Any:
        inputs.append(job_input.model_path.with_name("model.onnx.data").stat().st_ino)
        return tasks_run_job(job_input, *args, **kwargs)

    monkeypatch.setattr(tasks, "run_job", run_job)
    assert execute_job(job_id, WorkerContext.from_settings(settings)) is Outcome.SUCCEEDED
    assert inputs == [(root / external_key(key)).stat().st_ino]
    got = client.get(f"/v1/jobs/{job_id}/artifacts/model.onnx")
    assert got.status_code == 200
    written = onnx.load_from_string(got.content)
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    assert run(written, {"x": x})[0].shape == (2, 64)
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    report = client.get(f"/v1/jobs/{job_id}/report").json()
    # The model file's own hash (hashed by the job), not the upload's hash of the pair.
    assert report["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert report["model"]["sha256"] != body["sha256"]
    # onnxruntime read the linked data file for the float model's outputs.
    assert report["fidelity"]["output_sqnr_db"] > 10

    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert client.delete(f"/v1/models/{body['id']}").status_code == 204
    assert not (root / key).exists() and not (root / external_key(key)).exists()


def test_a_job_on_a_model_uploaded_without_its_external_data_fails_clearly(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    model = external_mlp(tmp_path / "in")
    body = _upload(client, model, None)
    job_id = client.post("/v1/jobs", json={"model_id": body["id"], "spec": {}}).json()["id"]
    assert execute_job(job_id, WorkerContext.from_settings(settings)) is Outcome.FAILED
    error = client.get(f"/v1/jobs/{job_id}").json()["error"]
    assert error["code"] == "unsafe_external_data"
    assert "no such file" in error["message"]


def test_external_data_with_a_weights_file_is_refused(client: TestClient, tmp_path: Path) -> None:
    from safetensors.numpy import save

    weights = save({"w": np.ones((4, 4), np.float32)})
    response = client.post("/v1/models", files={"file": ("w.safetensors", weights),
                                                "external_data": ("x.bin", b"\0" * 64)})
    assert response.status_code == 422, response.text
    assert "external_data" in response.json()["error"]["message"]
