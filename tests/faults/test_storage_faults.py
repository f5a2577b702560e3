"""The storage fails: S3 frozen for 12 s while jobs run (uploads and downloads fail within
their timeouts, /readyz says so at once, /healthz is untouched, the jobs wait it out and end
exactly once), and a full disk under the local storage (the job fails ``resource_limit``
once, lists no artifacts, and the next job succeeds once there is room)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests import models
from tests.faults.check import assert_exactly_once, stored_local, wait_all_final
from tests.faults.common import SPEC, submit_many, timed, upload_models
from tests.faults.parts import MotoProcess, frozen, small_disk
from tests.workers.flow import save_model, submit_ok, upload_model
from tests.workers.services import Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_s3_frozen_is_waited_out_and_bounded_for_callers(
    deployed: Callable[..., Service], moto: MotoProcess, tmp_path: Path,
) -> None:
    service = deployed()
    service.start_api()
    service.start_worker(concurrency=2)
    with service.client() as client:
        small, large = upload_models(client, tmp_path)
        first = submit_many(client, [small], 1)
        wait_all_final(client, first, 60, service.logs)
        jobs = [*first, *submit_many(client, [large, small, large, small], 8)]
        other = save_model(models.mlp((24, 40, 6), seed=9), tmp_path / "other.onnx")
        time.sleep(0.5)
        with frozen(moto.process.pid):
            frozen_at = time.monotonic()
            with open(other, "rb") as f:  # new bytes: the upload must reach the storage
                took, up = timed(client, "POST", "/v1/models", files={"file": ("o.onnx", f)})
            assert up.status_code >= 500 and took < 15.0, (took, up.status_code)
            started = time.monotonic()
            with pytest.raises(httpx.HTTPError):
                r = client.get(f"/v1/jobs/{first[0]}/artifacts/report.json", timeout=30)
                r.raise_for_status()
            assert time.monotonic() - started < 15.0
            time.sleep(max(0.0, 4.0 - (time.monotonic() - frozen_at)))
            took, ready = timed(client, "GET", "/readyz")
            assert ready.status_code == 503 and took < 1.0, (took, ready.text)
            assert ready.json()["error"]["details"]["checks"]["storage"] == "unavailable"
            took, health = timed(client, "GET", "/healthz")
            assert health.status_code == 200 and took < 0.05
            time.sleep(max(0.0, 12.0 - (time.monotonic() - frozen_at)))
        done = wait_all_final(client, jobs, 150, service.logs)
        assert all(j["status"] == "succeeded" for j in done.values()), service.logs()
        bucket = service.env["QUANTSERVE_S3_BUCKET"]
        assert_exactly_once(
            client, done, service,
            stored=lambda job_id: [k.rsplit("/", 1)[1]
                                   for k in moto.keys(bucket, f"jobs/{job_id}/")],
        )


def test_full_disk_fails_the_job_once_and_the_next_one_runs(
    embedded: Callable[..., Service], tmp_path: Path,
) -> None:
    model = save_model(models.large(1_000_000, seed=8), tmp_path / "model.onnx")
    size_kib = model.stat().st_size // 1024 + 300  # the upload fits; its artifacts do not
    storage = tmp_path / "storage"
    with small_disk(storage, f"{size_kib}k"):
        service = embedded()
        service.start_api()
        service.start_worker()
        with service.client() as client:
            uploaded = upload_model(client, model)["id"]
            jobs = [submit_ok(client, uploaded, SPEC)["id"] for _ in range(2)]
            done = wait_all_final(client, jobs, 90, service.logs)
            assert {j["status"] for j in done.values()} == {"failed"}, done
            assert {j["error"]["code"] for j in done.values()} == {"resource_limit"}
            assert_exactly_once(client, done, service, allowed=frozenset({"resource_limit"}),
                                stored=lambda job_id: stored_local(storage, job_id))
            assert all(stored_local(storage, j) == [] for j in jobs)  # nothing half-written
            subprocess.run(["mount", "-o", f"remount,size={size_kib * 8}k", str(storage)],
                           check=True, timeout=30)
            again = submit_ok(client, uploaded, SPEC)["id"]
            final = wait_all_final(client, [again], 90, service.logs)
            assert final[again]["status"] == "succeeded", final
            assert_exactly_once(client, final, service,
                                stored=lambda job_id: stored_local(storage, job_id))
        service.stop()
