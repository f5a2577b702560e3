"""PostgreSQL stopped for 15 s with jobs queued and running, then started again: the API
answers 503 quickly meanwhile (and /healthz at once), and every accepted job ends exactly
once, with one set of artifacts; no job is lost or failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.check import assert_exactly_once, wait_all_final
from tests.faults.common import SPEC, submit_many, timed, upload_models
from tests.faults.parts import MotoProcess, PrivatePostgres
from tests.workers.flow import submit
from tests.workers.services import Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_postgres_down_15s_loses_no_job(
    deployed: Callable[..., Service], pg_cluster: PrivatePostgres, moto: MotoProcess,
    tmp_path: Path,
) -> None:
    service = deployed()
    service.start_api()
    service.start_worker(concurrency=2)
    with service.client() as client:
        small, large = upload_models(client, tmp_path)
        jobs = submit_many(client, [large, small, small], 12)
        time.sleep(1.0)  # some running, most queued
        pg_cluster.stop()
        try:
            stopped = time.monotonic()
            took, refused = timed(client, "POST", "/v1/jobs",
                                  json={"model_id": small, "spec": SPEC})
            assert refused.status_code == 503 and took < 6.0, (took, refused.text)
            took, health = timed(client, "GET", "/healthz")
            assert health.status_code == 200 and took < 0.05, took
            time.sleep(2.0)
            took, ready = timed(client, "GET", "/readyz")
            assert ready.status_code == 503 and took < 1.0, took
            assert ready.json()["error"]["details"]["checks"]["database"] == "unavailable"
            time.sleep(max(0.0, 15.0 - (time.monotonic() - stopped)))
        finally:
            pg_cluster.start()
        after = submit(client, small, SPEC)
        assert after.status_code == 202, after.text
        done = wait_all_final(client, [*jobs, after.json()["id"]], 150, service.logs)
        assert all(j["status"] == "succeeded" for j in done.values()), (
            [j for j in done.values() if j["status"] != "succeeded"], service.logs())
        bucket = service.env["QUANTSERVE_S3_BUCKET"]
        assert_exactly_once(
            client, done, service,
            stored=lambda job_id: [k.rsplit("/", 1)[1]
                                   for k in moto.keys(bucket, f"jobs/{job_id}/")],
        )
