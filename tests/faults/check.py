"""What every fault test asserts: each accepted job ended, once, with one set of artifacts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from tests.workers.flow import FINAL
from tests.workers.services import Service

ARTIFACTS = {"report.json"}  # every kind writes it; quantize jobs also write the models


def all_logs(service: Service) -> str:
    """The whole output of every process of ``service`` (``Service.logs`` shows the tails)."""
    return "\n".join(p.log.read_text(errors="replace") for p in service.procs)


def wait_all_final(client: httpx.Client, job_ids: Iterable[str], timeout_s: float,
                   logs: Callable[[], str] | None = None) -> dict[str, dict[str, Any]]:
    """Every job's final state; fails naming the jobs still open after ``timeout_s``."""
    pending = set(job_ids)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            try:
                r = client.get(f"/v1/jobs/{job_id}", timeout=5)
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and r.json()["status"] in FINAL:
                done[job_id] = r.json()
                pending.discard(job_id)
        if pending:
            time.sleep(0.25)
    assert not pending, (f"{len(pending)} jobs not final after {timeout_s} s: "
                         f"{sorted(pending)[:5]}\n{logs() if logs else ''}")
    return done


def stored_local(storage: Path, job_id: str) -> list[str]:
    root = storage / "jobs" / job_id / "artifacts"
    return sorted(p.name for p in root.glob("*") if p.is_file()) if root.is_dir() else []


def assert_exactly_once(
    client: httpx.Client, jobs: dict[str, dict[str, Any]], service: Service, *,
    stored: Callable[[str], list[str]] | None = None, allowed: frozenset[str] = frozenset(),
) -> None:
    """Each job final once: succeeded (or with an error code in ``allowed``); a succeeded job
    lists one set of artifacts, exactly what storage holds for it; no worker recorded a job's
    success twice; a failed job lists none."""
    worker_logs = all_logs(service)
    for job_id, job in jobs.items():
        listing = client.get(f"/v1/jobs/{job_id}/artifacts").json()
        names = [a["name"] for a in listing]
        assert len(names) == len(set(names)), (job_id, names)
        successes = len(re.findall(rf"job {job_id} succeeded", worker_logs))
        if job["status"] == "succeeded":
            assert set(names) >= ARTIFACTS, (job_id, names)
            assert successes == 1, f"job {job_id} recorded {successes} successes"
            if stored is not None:
                assert stored(job_id) == sorted(names), (job_id, stored(job_id), names)
        else:
            assert job["status"] == "failed", job
            assert job["error"]["code"] in allowed, (job, service.logs())
            assert names == [] and successes == 0, (job_id, names)
