"""Redis stopped: submissions get 503 and /readyz says the broker is down; when it is back,
work resumes and no job is lost (the job queued before the outage runs too)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import models
from tests.workers.conftest import embedded_env
from tests.workers.flow import save_model, submit, submit_ok, upload_model, wait_final
from tests.workers.services import RedisServer, Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SPEC = {"method": "uniform", "bits": 4}


def test_broker_outage_gives_503_and_loses_no_job(
    service_factory: Callable[[dict[str, str]], Service],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    env = {**embedded_env(tmp_path), "QUANTSERVE_BROKER_URL": redis_server.url}
    service = service_factory(env)
    service.start_api()
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
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "broker" in ready.text
        # The refused submission is not left queued for ever.
        queued = client.get("/v1/jobs", params={"status": "queued"}).json()["data"]
        assert [j["id"] for j in queued] == [before["id"]]

        redis_server.start()  # same port, same append-only file
        assert client.get("/readyz").status_code == 200
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
