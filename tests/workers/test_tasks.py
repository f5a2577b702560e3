"""The job task's logic in one process, on real parts (SQLite job store, local storage, the
embedded broker file), without a Celery worker: claim, progress, cancel, failure codes,
redelivery and the attempt cap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from quantcore import Stage
from service.liveness import owner_of
from service.settings import Settings
from service.store.jobs import MAX_ATTEMPTS, JobStatus
from tests import models
from tests.workers.flow import save_model, upload_model
from workers.tasks import (
    JobStopped,
    Outcome,
    ProgressWriter,
    WorkerContext,
    execute_job,
)

SPEC = {"method": "uniform", "bits": 4}


def dead_owner() -> str:
    """The owner name of a process that has exited."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return owner_of(gone.pid)


@pytest.fixture
def ctx(settings: Settings, client: TestClient) -> WorkerContext:
    return WorkerContext.from_settings(settings)


@pytest.fixture
def model_id(client: TestClient, tmp_path: Path) -> str:
    path = save_model(models.mlp((16, 24, 8), seed=2), tmp_path / "mlp.onnx")
    return str(upload_model(client, path)["id"])  # type: ignore[arg-type]


def _submit(client: TestClient, model_id: str, spec: dict = SPEC) -> str:
    response = client.post("/v1/jobs", json={"model_id": model_id, "spec": spec})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _artifact_keys(settings: Settings, job_id: str) -> list[str]:
    root = Path(settings.storage_path) / "jobs" / job_id
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_job_runs_to_succeeded_with_progress_and_artifacts(
    client: TestClient, ctx: WorkerContext, model_id: str, settings: Settings
) -> None:
    job_id = _submit(client, model_id)
    assert execute_job(job_id, ctx) is Outcome.SUCCEEDED
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    names = {a["name"] for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()}
    assert {"model.onnx", "model.qpack", "report.json"} <= names
    assert _artifact_keys(settings, job_id) == sorted(f"artifacts/{n}" for n in names)


def test_redelivery_of_a_finished_job_does_nothing(
    client: TestClient, ctx: WorkerContext, model_id: str, settings: Settings
) -> None:
    job_id = _submit(client, model_id)
    assert execute_job(job_id, ctx) is Outcome.SUCCEEDED
    before = client.get(f"/v1/jobs/{job_id}/artifacts").json()
    assert execute_job(job_id, ctx) is Outcome.SKIPPED
    assert client.get(f"/v1/jobs/{job_id}/artifacts").json() == before


def test_job_left_running_by_a_dead_worker_runs_again_with_one_artifact_set(
    client: TestClient, ctx: WorkerContext, model_id: str, settings: Settings
) -> None:
    job_id = _submit(client, model_id)
    # the first worker took it, then died
    claimed = ctx.repo.claim(job_id, owner=dead_owner())
    assert claimed is not None and claimed.attempts == 1
    partial = Path(settings.storage_path) / "jobs" / job_id / "artifacts" / "model.onnx"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a model")

    assert execute_job(job_id, ctx) is Outcome.SUCCEEDED
    listing = client.get(f"/v1/jobs/{job_id}/artifacts").json()
    names = [a["name"] for a in listing]
    assert len(names) == len(set(names))
    assert partial.read_bytes() != b"half a model"
    assert _artifact_keys(settings, job_id) == sorted(f"artifacts/{n}" for n in names)


def test_a_duplicate_message_of_a_job_running_elsewhere_is_dropped(
    client: TestClient, ctx: WorkerContext, model_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="quantserve.worker")
    job_id = _submit(client, model_id)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # another live worker process runs it, with a fresh heartbeat
        assert ctx.repo.claim(job_id, owner=owner_of(live.pid)) is not None
        assert execute_job(job_id, ctx) is Outcome.SKIPPED
        assert ctx.repo.status(job_id) is JobStatus.RUNNING
    finally:
        live.kill()
        live.wait()
    # its process died: the next delivery takes the job over at once
    assert execute_job(job_id, ctx) is Outcome.SUCCEEDED
    assert "started (attempt 2)" in caplog.text


def test_cancelled_before_start_is_skipped(
    client: TestClient, ctx: WorkerContext, model_id: str
) -> None:
    job_id = _submit(client, model_id)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202)
    assert execute_job(job_id, ctx) is Outcome.SKIPPED
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_progress_writer_throttles_and_stops_a_cancelled_job(
    client: TestClient, ctx: WorkerContext, model_id: str
) -> None:
    job_id = _submit(client, model_id)
    assert ctx.repo.claim(job_id) is not None
    now = [0.0]
    writer = ProgressWriter(ctx.repo, job_id, attempt=1, interval_s=0.5, clock=lambda: now[0])
    writer(Stage.LOADING, 0.05)
    writer(Stage.LOADING, 0.06)  # same stage, too soon: not written
    assert writer.writes == 1
    writer(Stage.QUANTIZING, 0.1)  # a new stage is always written
    now[0] = 1.0
    writer(Stage.QUANTIZING, 0.4)
    assert writer.writes == 3
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["stage"], job["progress"]) == ("quantizing", 0.4)

    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202)
    now[0] = 2.0
    with pytest.raises(JobStopped):
        writer(Stage.QUANTIZING, 0.6)
    assert ctx.repo.status(job_id) is JobStatus.CANCELLED


def test_a_stale_attempt_stops_at_its_next_progress_call(
    client: TestClient, ctx: WorkerContext, model_id: str
) -> None:
    job_id = _submit(client, model_id)
    first = ctx.repo.claim(job_id)
    assert first is not None
    stale = ProgressWriter(ctx.repo, job_id, attempt=first.attempts, interval_s=0.0)
    stale(Stage.LOADING, 0.1)
    second = ctx.repo.claim(job_id)  # redelivered while the first run still goes on
    assert second is not None and second.attempts == 2
    with pytest.raises(JobStopped, match="attempt 1"):
        stale(Stage.QUANTIZING, 0.5)
    current = ProgressWriter(ctx.repo, job_id, attempt=second.attempts, interval_s=0.0)
    current(Stage.QUANTIZING, 0.2)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["stage"], job["progress"]) == ("running", "quantizing", 0.2)


def test_core_error_fails_the_job_with_its_code(
    client: TestClient, ctx: WorkerContext, model_id: str, settings: Settings
) -> None:
    job_id = _submit(client, model_id)
    # The stored upload is damaged after it was accepted: the core refuses to read it.
    for blob in (Path(settings.storage_path) / "blobs").glob("*.onnx"):
        blob.write_bytes(b"not an onnx file")
    assert execute_job(job_id, ctx) is Outcome.FAILED
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_model"
    assert job["error"]["message"]


def test_a_job_whose_worker_keeps_dying_fails_after_the_attempt_cap(
    client: TestClient, ctx: WorkerContext, model_id: str
) -> None:
    job_id = _submit(client, model_id)
    for _ in range(MAX_ATTEMPTS):  # claimed, then the worker died
        assert ctx.repo.claim(job_id, owner=dead_owner()) is not None
    assert execute_job(job_id, ctx) is Outcome.SKIPPED
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["code"] == "worker_lost"
    assert str(MAX_ATTEMPTS) in job["error"]["message"]


def test_a_missing_upload_fails_the_job_with_storage_error(
    client: TestClient, ctx: WorkerContext, model_id: str, settings: Settings
) -> None:
    job_id = _submit(client, model_id)
    for blob in (Path(settings.storage_path) / "blobs").glob("*.onnx"):
        blob.unlink()
    assert execute_job(job_id, ctx) is Outcome.FAILED
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["code"] == "storage_error"
    assert "blobs/" in job["error"]["message"]


def test_an_error_caused_by_the_process_stopping_is_not_the_jobs() -> None:
    from workers.tasks import _stopped

    try:
        try:
            raise SystemExit(-15)
        except SystemExit as stop:
            raise ImportError("initialization failed") from stop  # an import cut short
    except ImportError as exc:
        assert _stopped(exc)
    assert not _stopped(ValueError("a bug"))


@pytest.mark.parametrize("where", ["skeleton", "_parse_in_place"])
def test_the_soft_time_limit_inside_the_parser_is_a_timeout(
    client: TestClient, ctx: WorkerContext, model_id: str, monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    # Celery raises the soft limit wherever the job is; in the ONNX parse, whose broad except
    # turns any failure into "not a readable ONNX model", and in the reading in place, which
    # falls back to a whole parse on bad bytes, it must still read as a timeout.
    from celery.exceptions import SoftTimeLimitExceeded

    from quantcore.formats import onnx_reader

    def interrupted(*args: object) -> None:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(onnx_reader, where, interrupted)
    job_id = _submit(client, model_id)
    assert execute_job(job_id, ctx) is Outcome.FAILED
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["code"] == "timeout", job["error"]
    assert "QUANTSERVE_JOB_SOFT_TIME_LIMIT_S" in job["error"]["message"]
