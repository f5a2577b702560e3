"""Steps the fault tests share: models, submitting many jobs, timing the probes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests import models
from tests.workers.flow import save_model, submit, upload_model

SPEC = {"method": "uniform", "bits": 4, "granularity": "layer"}


def upload_models(client: httpx.Client, folder: Path) -> tuple[str, str]:
    """A small model (a job of a fraction of a second) and a larger one (a few seconds)."""
    small = save_model(models.mlp((32, 48, 10), seed=5), folder / "small.onnx")
    large = save_model(models.large(4_000_000, seed=6), folder / "large.onnx")
    return upload_model(client, small)["id"], upload_model(client, large)["id"]


def submit_many(client: httpx.Client, model_ids: list[str], n: int) -> list[str]:
    """``n`` jobs over ``model_ids`` in turn; every one must be accepted."""
    ids = []
    for i in range(n):
        r = submit(client, model_ids[i % len(model_ids)], SPEC)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def timed(client: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[float,
                                                                                httpx.Response]:
    started = time.monotonic()
    r = client.request(method, path, **kwargs)
    return time.monotonic() - started, r
