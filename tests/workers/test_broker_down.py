"""Redis stopped: submissions get 503 and /readyz says the broker is down; when it is back,
work resumes and no job is lost (the job queued before the outage runs too)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import models
from tests.workers.conftest import SHORT_TIME_LIMITS
from tests.workers.flow import (
    save_model,
    submit,
    submit_ok,
    upload_model,
    wait_final,
    wait_until,
)
from tests.workers.services import RedisServer, Service, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SPEC = {"method": "uniform", "bits": 4}


def test_broker_outage_gives_503_and_loses_no_job(
    redis_service: Callable[..., Service], redis_server: RedisServer, tmp_path: Path
) -> None:
    service = redis_service()
    path = save_model(models.mlp((32, 48, 10), seed=5), tmp_path / "mlp.onnx")
    with service.client() as client:
        model = upload_model(client, path)
        # Accepted while Redis is up; no worker yet, so it waits in Redis over the outage.
        before = submit_ok(client, model["id"], SPEC)

        redis_server.stop()
        started = time.monotonic()
        refused = submit(client, model["id"], SPEC)
        assert time.monotonic() - started < 5.0, "a submission must not wait out retries"
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "broker_unavailable"
        assert "broker" in error["message"]
        # /readyz answers from probes refreshed every 2 s in the background
        wait_for(lambda: client.get("/readyz").status_code == 503, 6, "readiness to see it")
        ready = client.get("/readyz")
        assert "broker" in ready.text
        # The refused submission is not left queued for ever.
        queued = client.get("/v1/jobs", params={"status": "queued"}).json()["data"]
        assert [j["id"] for j in queued] == [before["id"]]

        redis_server.start()  # same port, same append-only file
        wait_for(lambda: client.get("/readyz").status_code == 200, 6, "readiness again")
        after = submit_ok(client, model["id"], SPEC)

        service.start_worker()
        for job in (before, after):
            done = wait_final(client, job["id"], 60, service.logs)
            assert done["status"] == "succeeded", (done, service.logs())

        # A worker that was running through an outage reconnects and takes new work.
        redis_server.stop()
        time.sleep(1.0)
        redis_server.start()
        again = submit_ok(client, model["id"], SPEC)
        done = wait_final(client, again["id"], 60, service.logs)
        assert done["status"] == "succeeded", (done, service.logs())


def test_broker_restart_while_a_job_runs_leaves_one_result(
    redis_service: Callable[..., Service], redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis goes away and comes back while a worker runs a job: the job finishes once, and
    the message whose acknowledgement was lost, handed out again after the visibility
    timeout (15 s here), finds the job final and changes nothing."""
    service = redis_service(SHORT_TIME_LIMITS)
    worker = service.start_worker()
    path = save_model(models.large(8_000_000, seed=4), tmp_path / "large.onnx")
    with service.client() as client:
        job = submit_ok(client, upload_model(client, path)["id"], SPEC)
        wait_until(client, job["id"], lambda j: j["status"] == "running", timeout_s=60)
        redis_server.stop()
        time.sleep(1.0)
        redis_server.start()
        done = wait_final(client, job["id"], 60, service.logs)
        assert done["status"] == "succeeded", (done, service.logs())
        first = client.get(f"/v1/jobs/{job['id']}/artifacts").json()

        time.sleep(20)  # past the visibility timeout: any redelivery has happened
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
        assert client.get(f"/v1/jobs/{job['id']}/artifacts").json() == first
        names = [a["name"] for a in first]
        assert len(names) == len(set(names)) and "model.onnx" in names
    assert worker.log.read_text().count(f"job {job['id']} succeeded") == 1
