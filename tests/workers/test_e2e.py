"""Upload, submit, a real worker runs the job, report and artifacts fetched, the quantized
model run in onnxruntime: on the embedded shape (``quantserve serve``: SQLite, SQLite broker,
local folder) and on the deployed one (PostgreSQL, Redis, S3)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from quantcore.formats.qpack import unpack
from service.store.db import Database
from service.store.jobs import JobsRepo
from service.store.models import Job
from tests import models
from tests.workers.conftest import embedded_env
from tests.workers.flow import (
    check_quantized_model,
    fetch_artifacts,
    save_model,
    submit,
    upload_model,
    wait_final,
)
from tests.workers.services import Service, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SPEC = {"method": "uniform", "bits": 6, "granularity": "layer", "support": "jayant"}
TRELLIS = {"target": {"weight_sqnr_db": 30}, "rdoq": "trellis"}


def _round_trip(service: Service, tmp_path: Path) -> None:
    original = save_model(models.mlp((64, 128, 96, 10), seed=3), tmp_path / "mlp.onnx")
    rng = np.random.default_rng(1)
    eval_set = tmp_path / "eval.npz"
    np.savez(
        eval_set, x=rng.standard_normal((40, 64)).astype(np.float32), labels=rng.integers(0, 10, 40)
    )
    with service.client() as client:
        model = upload_model(client, original)
        assert model["format"] == "onnx" and model["n_tensors"] == 6
        with open(eval_set, "rb") as f:
            dataset = client.post("/v1/datasets", files={"file": ("eval.npz", f)})
        assert dataset.status_code == 201, dataset.text
        response = submit(client, model["id"], SPEC, dataset_id=dataset.json()["id"])
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] == "queued" and job["spec"]["bits"] == 6

        done = wait_final(client, job["id"], 60, service.logs)
        assert done["status"] == "succeeded", (done, service.logs())
        assert done["progress"] == 1.0 and done["error"] is None
        assert done["started_at"] <= done["finished_at"]
        assert done["summary"]["quantized_params"] == 64 * 128 + 128 * 96 + 96 * 10

        report = client.get(f"/v1/jobs/{job['id']}/report").json()
        assert report["spec"]["bits"] == 6
        assert report["model"]["sha256"] == model["sha256"]
        assert {layer["name"] for layer in report["layers"]} >= {"fc0.weight", "fc2.weight"}
        # 6-bit Laplacian-designed quantizer: about 6 dB per bit minus the support loss.
        assert 25.0 < report["summary"]["sqnr_db"] < 40.0
        # The evaluation set travelled through storage to the worker and was run.
        assert report["accuracy"]["samples"] == 40
        assert 0.0 <= report["accuracy"]["agreement"] <= 1.0

        files = fetch_artifacts(client, job["id"], tmp_path / "artifacts")
        assert {"model.onnx", "model.qpack", "report.json"} <= set(files)
        assert json.loads(files["report.json"].read_text())["summary"] == report["summary"]
        x = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
        check_quantized_model(original, files["model.onnx"], x, max_rel=0.1)

        # A rate-distortion target with trellis-coded quantization: met, its package's v7 or v8
        # streams unpack to the runnable model byte for byte.
        response = submit(client, model["id"], TRELLIS)
        assert response.status_code == 202, response.text
        done = wait_final(client, response.json()["id"], 60, service.logs)
        assert done["status"] == "succeeded", (done, service.logs())
        report = client.get(f"/v1/jobs/{done['id']}/report").json()
        assert report["spec"]["rdoq"] == "trellis"
        assert report["allocation"]["trellis"] is True
        assert report["allocation"]["achieved"]["met"] is True
        files = fetch_artifacts(client, done["id"], tmp_path / "trellis")
        assert unpack(files["model.qpack"].read_bytes())[1] == files["model.onnx"].read_bytes()
        check_quantized_model(original, files["model.onnx"], x, max_rel=0.1)


def test_embedded_serve_runs_a_job_end_to_end(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    service = service_factory(embedded_env(tmp_path))
    api = service.start_api(with_worker=True)  # `quantserve serve`: API + one worker subprocess
    _round_trip(service, tmp_path)

    # SIGTERM to `serve` alone (as a process manager sends it) stops its worker too.
    os.kill(api.pid, signal.SIGTERM)
    wait_for(lambda: not _group_alive(api.pid), 30, "serve and its worker to exit")


def test_serve_killed_outright_takes_its_worker_along(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    service = service_factory(embedded_env(tmp_path))
    api = service.start_api(with_worker=True)
    wait_for(lambda: "ready" in api.log.read_text(errors="replace"), 60, "the worker")
    os.kill(api.pid, signal.SIGKILL)  # no cleanup runs in serve: the kernel tells the worker
    wait_for(lambda: not _group_alive(api.pid), 30, "the worker to exit after serve died")


def _group_alive(pgid: int) -> bool:
    # serve is the test's child: reap it if it has exited, or its zombie keeps the group.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_deployed_shape_runs_a_job_end_to_end(
    service_factory: Callable[[dict[str, str]], Service],
    deployed_env: dict[str, str],
    tmp_path: Path,
) -> None:
    service = service_factory(deployed_env)
    service.start_api()
    service.start_worker()
    with service.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
    _round_trip(service, tmp_path)


def test_several_workers_share_the_queue_and_run_each_job_once(
    redis_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = redis_service()
    workers = [service.start_worker(f"w{i}") for i in range(2)]
    for worker in workers:
        wait_for(lambda w=worker: "ready." in w.log.read_text(), 60, f"{worker.name} ready")
    path = save_model(models.mlp((64, 256, 128, 10), seed=7), tmp_path / "mlp.onnx")
    with service.client() as client:
        model_id = upload_model(client, path)["id"]
        sweep = [
            {"model_id": model_id, "spec": {"method": "uniform", "bits": b}} for b in range(2, 8)
        ]
        batch = client.post("/v1/jobs/batch", json={"jobs": sweep})
        assert batch.status_code == 202, batch.text
        body = batch.json()
        jobs = body["data"] if isinstance(body, dict) else body
        assert len(jobs) == 6
        for job in jobs:
            done = wait_final(client, job["id"], 90, service.logs)
            assert done["status"] == "succeeded", (done, service.logs())

    repo = JobsRepo(Database(service.env["QUANTSERVE_DATABASE_URL"]))
    for job in jobs:
        claimed = repo.claim(job["id"])
        assert claimed is None  # final: a late redelivery would find nothing to do
    with repo.db.session() as session:
        attempts = session.scalars(select(Job.attempts)).all()
    assert sorted(attempts) == [1] * 6, "every job ran exactly once"
    started = [w.log.read_text().count("started (attempt 1)") for w in workers]
    assert sum(started) == 6 and min(started) >= 1, started
