"""Sweeps and searches submitted over HTTP run to success in a real worker: the spec the API
stores is the one the worker parses (a sweep's stored spec once carried its point count,
which the worker refused as an unknown field, so every sweep failed).

The embedded shape (``quantserve serve``: SQLite, SQLite broker, local folder, one worker
subprocess): a sweep as JSON, a search as multipart with its files, and a batch of both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests import models
from tests.workers.conftest import embedded_env
from tests.workers.flow import save_model, upload_model, wait_final
from tests.workers.services import Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SWEEP = {"base": {"granularity": "layer"}, "grid": {"bits": [3, 6], "method": ["uniform"]}}
SEARCH = {"candidates": {"bits": [4, 8]}, "max_top1_drop": 0.5, "mixed_precision": False}


def _files(tmp_path: Path) -> tuple[Path, Path]:
    model = save_model(models.mlp((32, 48, 10), seed=5), tmp_path / "mlp.onnx")
    rng = np.random.default_rng(2)
    dataset = tmp_path / "eval.npz"
    np.savez(dataset, x=rng.standard_normal((32, 32)).astype(np.float32),
             labels=rng.integers(0, 10, 32))
    return model, dataset


def test_sweep_and_search_over_http_succeed_in_a_real_worker(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    service = service_factory(embedded_env(tmp_path))
    service.start_api(with_worker=True)
    model_path, dataset_path = _files(tmp_path)
    with service.client() as client:
        model = upload_model(client, model_path)
        with open(dataset_path, "rb") as f:
            dataset = client.post("/v1/datasets", files={"file": ("eval.npz", f)})
        assert dataset.status_code == 201, dataset.text

        sweep = client.post("/v1/jobs", json={"model_id": model["id"], "kind": "sweep",
                                              "spec": SWEEP})
        assert sweep.status_code == 202, sweep.text
        assert sweep.json()["spec"] == SWEEP  # stored as the worker will parse it

        with open(model_path, "rb") as m, open(dataset_path, "rb") as d:
            search = client.post(
                "/v1/jobs",
                files={"model": ("mlp.onnx", m), "dataset": ("eval.npz", d)},
                data={"kind": "search", "spec": json.dumps(SEARCH)},
            )
        assert search.status_code == 202, search.text
        assert search.json()["dataset_id"] == dataset.json()["id"]  # the same bytes

        batch = client.post("/v1/jobs/batch", json={"jobs": [
            {"model_id": model["id"], "kind": "sweep",
             "spec": {"grid": {"bits": [4, 5]}}, "dataset_id": dataset.json()["id"]},
            {"model_id": model["id"], "kind": "search", "spec": SEARCH,
             "dataset_id": dataset.json()["id"]},
        ]})
        assert batch.status_code == 202, batch.text

        jobs = [sweep.json(), search.json(), *batch.json()["data"]]
        done = {job["id"]: wait_final(client, job["id"], 180, service.logs) for job in jobs}
        for job_id, job in done.items():
            assert job["status"] == "succeeded", (job, service.logs())
            report = client.get(f"/v1/jobs/{job_id}/report").json()
            assert report["kind"] == job["kind"]

        sweep_report = client.get(f"/v1/jobs/{sweep.json()['id']}/report").json()
        assert [row["point"] for row in sweep_report["rows"]] == [
            {"bits": 3, "method": "uniform"}, {"bits": 6, "method": "uniform"}]
        assert sweep_report["spec"]["points"] == 2
        batch_sweep = client.get(f"/v1/jobs/{batch.json()['data'][0]['id']}/report").json()
        assert all(row["accuracy"] is not None for row in batch_sweep["rows"])

        search_report = client.get(f"/v1/jobs/{search.json()['id']}/report").json()
        assert search_report["met_budget"] is True
        assert search_report["accuracy"]["samples"] == 32
        names = {a["name"] for a in client.get(
            f"/v1/jobs/{search.json()['id']}/artifacts").json()}
        assert {"model.onnx", "model.qpack", "report.json"} <= names
