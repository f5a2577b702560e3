"""The steps a caller takes through the API, shared by the end-to-end tests."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort

FINAL = {"succeeded", "failed", "cancelled"}


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def upload_model(client: httpx.Client, path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        response = client.post("/v1/models", files={"file": (path.name, f)})
    assert response.status_code == 201, response.text
    return dict(response.json())


def submit(
    client: httpx.Client, model_id: str, spec: dict[str, Any], **extra: Any
) -> httpx.Response:
    return client.post("/v1/jobs", json={"model_id": model_id, "spec": spec, **extra})


def submit_ok(client: httpx.Client, model_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = submit(client, model_id, spec)
    assert response.status_code == 202, response.text
    assert response.headers["location"].endswith(response.json()["id"])
    return dict(response.json())


def wait_final(client: httpx.Client, job_id: str, timeout_s: float, logs: Any = None) -> dict:
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in FINAL:
            return job
        time.sleep(0.1)
    extra = logs() if callable(logs) else ""
    raise AssertionError(f"job {job_id} not final after {timeout_s} s: {job}\n{extra}")


def wait_until(client: httpx.Client, job_id: str, predicate: Any, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if predicate(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached the state wanted: {job}")


def fetch_artifacts(client: httpx.Client, job_id: str, out_dir: Path) -> dict[str, Path]:
    """Download every artifact, checking size, sha256 and ETag against the listing."""
    listing = client.get(f"/v1/jobs/{job_id}/artifacts")
    assert listing.status_code == 200, listing.text
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for artifact in listing.json():
        response = client.get(f"/v1/jobs/{job_id}/artifacts/{artifact['name']}")
        assert response.status_code == 200, response.text
        body = response.content
        assert len(body) == artifact["size_bytes"]
        assert hashlib.sha256(body).hexdigest() == artifact["sha256"]
        assert response.headers["etag"].strip('"') == artifact["sha256"]
        path = out_dir / artifact["name"]
        path.write_bytes(body)
        paths[artifact["name"]] = path
    return paths


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def check_quantized_model(original: Path, quantized: Path, x: np.ndarray, max_rel: float) -> None:
    """The quantized model runs in onnxruntime and stays close to the float one."""
    y_float, y_quant = run_onnx(original, x), run_onnx(quantized, x)
    assert y_quant.shape == y_float.shape
    assert np.isfinite(y_quant).all()
    rel = np.linalg.norm(y_quant - y_float) / np.linalg.norm(y_float)
    assert rel < max_rel, f"relative output error {rel:.4f} >= {max_rel}"
    assert not np.array_equal(y_quant, y_float), "the weights were not quantized"
