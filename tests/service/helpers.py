"""Small helpers shared by the API tests: model bytes, uploads, a worker's moves on a job."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.deps import AppContext
from service.store.artifacts import store_artifacts
from tests import models


def mlp_bytes(seed: int = 0) -> bytes:
    return models.mlp(seed=seed).SerializeToString()


def dataset_bytes(n: int = 8, n_in: int = 16) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, x=rng.standard_normal((n, n_in)).astype(np.float32),
             labels=rng.integers(0, 10, n))
    return buf.getvalue()


def upload_model(client: TestClient, data: bytes | None = None, *, name: str = "m.onnx",
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = client.post("/v1/models", files={"file": (name, data or mlp_bytes())},
                    headers=headers or {})
    assert r.status_code == 201, r.text
    return r.json()


def submit(client: TestClient, model_id: str, spec: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = client.post("/v1/jobs", json={"model_id": model_id, "spec": spec or {"bits": 4}},
                    headers=headers or {})
    assert r.status_code == 202, r.text
    return r.json()


def ctx_of(app: FastAPI) -> AppContext:
    return app.state.ctx


def finish_job(app: FastAPI, job_id: str, tmp: Path) -> dict[str, Any]:
    """Do what a worker does on success: claim, store artifact files, record the report."""
    ctx = ctx_of(app)
    claimed = ctx.jobs.claim(job_id)
    assert claimed is not None
    ctx.jobs.set_progress(job_id, "writing", 0.9, attempt=claimed.attempts)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "model.onnx").write_bytes(b"".join(ctx.storage.iter_bytes(claimed.model_key)))
    report = {"summary": {"bits_per_weight": 4.0, "compression_ratio": 8.0}, "layers": []}
    (tmp / "report.json").write_text('{"summary": {}}')
    records = store_artifacts(ctx.storage, job_id, [tmp / "model.onnx", tmp / "report.json"])
    assert ctx.jobs.succeed(job_id, report, records, attempt=claimed.attempts)
    return report
