"""A worker killed with SIGKILL in the middle of a job: the job is run again by another
worker and succeeds, with exactly one set of artifacts."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests import models
from tests.workers.conftest import SHORT_TIME_LIMITS, embedded_env
from tests.workers.flow import (
    check_quantized_model,
    fetch_artifacts,
    save_model,
    submit_ok,
    upload_model,
    wait_final,
    wait_until,
)
from tests.workers.services import Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

# Hard limit 10 s (SHORT_TIME_LIMITS), so Redis hands an unacknowledged job out again soon.
# Seconds of quantization, so there is a "middle" to kill in: rate-distortion optimised
# rounding (``rdoq``) of 12M weights quantizes for about 1.5 s (2026-12-04, a Zen 4); plain
# rounding took 0.2 s, a window the test's polls missed on a loaded machine.
N_PARAMS = 12_000_000


def test_sigkilled_worker_job_runs_again_with_one_set_of_artifacts(
    redis_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = redis_service(SHORT_TIME_LIMITS)
    original = save_model(models.large(N_PARAMS, seed=1), tmp_path / "large.onnx")
    spec = {"method": "uniform", "bits": 4, "granularity": "layer", "rdoq": True}
    with service.client() as client:
        model = upload_model(client, original)
        job = submit_ok(client, model["id"], spec)

        first = service.start_worker("doomed")
        running = wait_until(
            client,
            job["id"],
            lambda j: j["status"] == "running" and j["stage"] in ("quantizing", "writing"),
            timeout_s=60,
        )
        assert running["progress"] < 1.0
        first.kill_hard()
        assert not first.alive()
        after_kill = client.get(f"/v1/jobs/{job['id']}").json()
        assert after_kill["status"] == "running", after_kill  # abandoned, not lost

        service.start_worker("rescuer")
        done = wait_final(client, job["id"], 90, service.logs)
        assert done["status"] == "succeeded", (done, service.logs())

        listing = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
        names = [a["name"] for a in listing]
        assert len(names) == len(set(names)), names
        stored = sorted(
            p.name
            for p in (tmp_path / "storage").rglob("*")
            if p.is_file() and job["id"] in p.as_posix()
        )
        assert stored == sorted(names), "storage holds exactly the listed artifacts"
        files = fetch_artifacts(client, job["id"], tmp_path / "artifacts")

    x = np.random.default_rng(0).standard_normal((2, 64, 8, 8)).astype(np.float32)
    check_quantized_model(original, files["model.onnx"], x, max_rel=0.35)


def test_pool_process_killed_mid_job_is_run_again_at_once(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    """Only the pool process dies (the out-of-memory killer's choice): the worker's main
    process puts the job back at once (reject on worker lost) and runs it again."""
    service = service_factory(embedded_env(tmp_path))
    service.start_api()
    original = save_model(models.large(N_PARAMS, seed=3), tmp_path / "large.onnx")
    spec = {"method": "uniform", "bits": 4, "granularity": "layer"}
    with service.client() as client:
        job = submit_ok(client, upload_model(client, original)["id"], spec)
        worker = service.start_worker()
        wait_until(client, job["id"], lambda j: j["status"] == "running", timeout_s=60)
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGKILL)

        done = wait_final(client, job["id"], 60, service.logs)
        assert done["status"] == "succeeded", (done, service.logs())
        assert "started (attempt 2)" in worker.log.read_text()
        names = [a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()]
        assert len(names) == len(set(names)) and "model.onnx" in names
