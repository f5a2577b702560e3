"""Durability figures: recovery after a worker is SIGKILLed and after a 15 s database outage, on
both shapes, jobs lost (must be 0), and the API's latency under 50 paced clients while the
broker is frozen.

Everything runs for real on loopback, with the default settings (heartbeat timeout 60 s,
reaper every 10 s, Redis visibility timeout 60 s), each part on servers of its own
(``tests/faults/parts.py``):

1. Worker SIGKILL mid-job. Embedded: ``quantserve serve``'s worker main process is killed;
   the supervisor restarts it and its reaper sees the dead owner at once. Deployed (private
   PostgreSQL, Redis, moto S3): a whole worker of "machine A" is killed and a worker of
   "machine B" (``QUANTSERVE_HOST_ID``) must take the job back from its heartbeat's age, the
   case of a lost machine; and the same on one machine (the dead process is seen at once).
   Recovery = kill → the killed job succeeded (including its re-run).
2. Database outage of 15 s with ``--jobs`` jobs accepted. Deployed: PostgreSQL stopped for
   15 s. Embedded: the SQLite job store write-locked for 15 s (SQLite has no server to stop).
   Recovery = end of the outage → every job final. Jobs lost = accepted − succeeded.
3. API latency: 50 clients, each sending ``GET /healthz`` and ``POST /v1/jobs`` in turn every
   0.5 s (100 requests/s in all, open loop, a latency counted from the request's sending)
   for ``--seconds`` while Redis is frozen (SIGSTOP). p50/p99/max of each; target:
   /healthz p99 < 50 ms. Baseline, first in the same frozen window: the /healthz half of the
   load alone (50 clients, one /healthz a second each), the floor this machine gives. The
   clients are ``bench.loadgen``'s (about 0.15 ms of CPU a request, against 3-6 ms for
   httpx, which shares the 2 cores with the server under test).

Run: ``python -m bench.bench_faults [--jobs 12] [--seconds 10]``.
Writes ``bench/results/bench_faults.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import loadgen
from bench.common import write_results
from tests import models
from tests.faults.common import SPEC, submit_many, upload_models
from tests.faults.parts import MotoProcess, PrivatePostgres, frozen
from tests.workers.conftest import S3_CREDENTIALS, embedded_env
from tests.workers.flow import FINAL, save_model, submit, upload_model, wait_until
from tests.workers.services import RedisServer, Service, wait_for

TARGET_HEALTHZ_P99_S = 0.05
LONG_SPEC = {"bits": 4}


def _final(client: httpx.Client, ids: list[str], timeout_s: float) -> dict[str, str]:
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(states) < len(ids):
        for job_id in ids:
            if job_id not in states:
                with_status = client.get(f"/v1/jobs/{job_id}").json()["status"]
                if with_status in FINAL:
                    states[job_id] = with_status
        time.sleep(0.2)
    return states


def _children(pid: int) -> list[int]:
    return [int(p) for f in Path(f"/proc/{pid}/task").glob("*/children")
            for p in f.read_text().split()]


class Parts:
    """The deployed shape's servers, one set for the whole run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.pg = PrivatePostgres()
        self.pg.start()
        self.moto = MotoProcess(folder)
        self.redis = RedisServer(folder / "redis")
        self.redis.start()

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **S3_CREDENTIALS,
            "QUANTSERVE_DATABASE_URL": self.pg.create_database(),
            "QUANTSERVE_BROKER_URL": self.redis.url,
            "QUANTSERVE_STORAGE": "s3",
            "QUANTSERVE_S3_ENDPOINT_URL": self.moto.url,
            "QUANTSERVE_S3_BUCKET": self.moto.create_bucket(),
            "QUANTSERVE_STORAGE_PATH": str(self.folder / "spool"),
            "QUANTSERVE_RATE_LIMIT_PER_MINUTE": "0",
            "QUANTSERVE_LOG_LEVEL": "WARNING",
            **extra,
        }

    def close(self) -> None:
        self.redis.stop()
        self.moto.stop()
        self.pg.remove()


@contextmanager
def running(env: dict[str, str], folder: Path) -> Iterator[Service]:
    folder.mkdir(parents=True, exist_ok=True)
    service = Service(env, folder)
    try:
        yield service
    finally:
        service.stop()


def _long_job(client: httpx.Client, folder: Path) -> str:
    model = save_model(models.large(12_000_000, seed=3), folder / "long.onnx")
    r = submit(client, upload_model(client, model)["id"], LONG_SPEC)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def kill_embedded(folder: Path) -> dict[str, Any]:
    with running({**embedded_env(folder), "QUANTSERVE_LOG_LEVEL": "WARNING"},
                 folder / "svc") as service:
        api = service.start_api(with_worker=True)
        with service.client() as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, 60, "ready")
            job = _long_job(client, folder)
            wait_until(client, job, lambda j: j["status"] == "running", 60)
            os.kill(_children(api.pid)[0], signal.SIGKILL)
            killed = time.monotonic()
            states = _final(client, [job], 300)
            return {"shape": "embedded", "case": "serve's worker SIGKILLed",
                    "recovery_s": round(time.monotonic() - killed, 1),
                    "status": states.get(job, "not final")}


def kill_deployed(parts: Parts, folder: Path, *, other_machine: bool) -> dict[str, Any]:
    env = parts.env(QUANTSERVE_HOST_ID="machine-a")
    with running(env, folder) as service:
        service.start_api()
        doomed = service.start_worker("doomed")
        with service.client() as client:
            job = _long_job(client, folder)
            wait_until(client, job, lambda j: j["status"] == "running", 60)
            doomed.kill_hard()
            killed = time.monotonic()
            service.env["QUANTSERVE_HOST_ID"] = "machine-b" if other_machine else "machine-a"
            service.start_worker("rescuer")
            states = _final(client, [job], 300)
            case = ("whole worker SIGKILLed, taken over by another machine" if other_machine
                    else "whole worker SIGKILLed, replaced on its machine")
            return {"shape": "deployed", "case": case,
                    "recovery_s": round(time.monotonic() - killed, 1),
                    "status": states.get(job, "not final")}


def _outage(service: Service, folder: Path, n_jobs: int, outage: Callable[[], None],
            shape: str) -> dict[str, Any]:
    with service.client() as client:
        small, large = upload_models(client, folder)
        ids = submit_many(client, [large, small, small], n_jobs)
        time.sleep(1.0)
        outage()
        ended = time.monotonic()
        states = _final(client, ids, 400)
        succeeded = sum(1 for s in states.values() if s == "succeeded")
        return {"shape": shape, "accepted": len(ids), "succeeded": succeeded,
                "lost": len(ids) - succeeded,
                "recovery_s": round(time.monotonic() - ended, 1)}


def db_outage_deployed(parts: Parts, folder: Path, n_jobs: int) -> dict[str, Any]:
    def outage() -> None:
        parts.pg.stop()
        time.sleep(15)
        parts.pg.start()

    with running(parts.env(), folder) as service:
        service.start_api()
        service.start_worker(concurrency=2)
        return _outage(service, folder, n_jobs, outage, "deployed (PostgreSQL stopped 15 s)")


def db_outage_embedded(folder: Path, n_jobs: int) -> dict[str, Any]:
    def outage() -> None:
        conn = sqlite3.connect(folder / "quantserve.db", isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(15)
        conn.execute("ROLLBACK")
        conn.close()

    env = {**embedded_env(folder), "QUANTSERVE_LOG_LEVEL": "WARNING"}
    with running(env, folder / "svc") as service:
        service.start_api(with_worker=True)
        return _outage(service, folder, n_jobs, outage, "embedded (SQLite locked 15 s)")


def _paced(url: str, model_id: str | None, seconds: float) -> loadgen.Mixed:
    """The mixed load; with ``model_id`` None, only the /healthz half of it (the baseline)."""
    requests: list[tuple[str, str, str, Any]] = [("healthz", "GET", "/healthz", None)]
    if model_id is not None:
        requests.append(("submit", "POST", "/v1/jobs", {"model_id": model_id, "spec": SPEC}))
    return asyncio.run(loadgen.alternating(
        url, requests, clients=50, period_s=1.0 / len(requests), seconds=seconds,
    ))  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def frozen_broker_latency(parts: Parts, folder: Path, seconds: float) -> dict[str, Any]:
    with running(parts.env(), folder) as service:
        service.start_api()
        with service.client() as client:
            small, _ = upload_models(client, folder)
        assert parts.redis.process is not None
        with frozen(parts.redis.process.pid):
            alone = _paced(service.url, None, seconds / 2)
            got = _paced(service.url, small, seconds)
    row: dict[str, Any] = {"frozen": "redis", "clients": 50, "seconds": seconds,
                           "load_generator_cpu_s": round(got.client_cpu_s, 3),
                           "load_average": os.getloadavg()}  # fmt: skip
    for name in ("healthz", "submit"):
        values = got.latencies[name]
        row[name] = {"n": len(values), "p50_ms": round(statistics.median(values) * 1e3, 2),
                     "p99_ms": round(_pct(values, 0.99) * 1e3, 2),
                     "max_ms": round(max(values) * 1e3, 2)}
    base = alone.latencies["healthz"]
    row["healthz_alone"] = {"n": len(base), "p50_ms": round(statistics.median(base) * 1e3, 2),
                            "p99_ms": round(_pct(base, 0.99) * 1e3, 2),
                            "max_ms": round(max(base) * 1e3, 2)}  # fmt: skip
    row["status_codes"] = sorted(set(got.statuses))
    row["healthz_target_met"] = _pct(got.latencies["healthz"], 0.99) < TARGET_HEALTHZ_P99_S
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--parts", default="kill,outage,latency",
                        help="comma-separated: kill, outage, latency (default all)")
    args = parser.parse_args()
    chosen = set(args.parts.split(","))
    root = Path(tempfile.mkdtemp(prefix="qs-bench-faults-"))
    parts = Parts(root / "parts")
    kills: list[dict[str, Any]] = []
    outages: list[dict[str, Any]] = []
    latency: dict[str, Any] | None = None
    try:
        if "kill" in chosen:
            kills = [
                kill_embedded(root / "k1"),
                kill_deployed(parts, root / "k2", other_machine=False),
                kill_deployed(parts, root / "k3", other_machine=True),
            ]
        if "outage" in chosen:
            outages = [db_outage_embedded(root / "o1", args.jobs),
                       db_outage_deployed(parts, root / "o2", args.jobs)]
        if "latency" in chosen:
            latency = frozen_broker_latency(parts, root / "l1", args.seconds)
    finally:
        parts.close()
    if kills:
        print("\nworker SIGKILL mid-job (default settings)")
    for k in kills:
        print(f"  {k['shape']:9} {k['case']:58} recovery {k['recovery_s']:6.1f} s  {k['status']}")
    if outages:
        print("\n15 s database outage")
    for o in outages:
        print(f"  {o['shape']:38} accepted {o['accepted']:3}  succeeded {o['succeeded']:3}  "
              f"lost {o['lost']}  all final {o['recovery_s']:.1f} s after it ended")
    if latency is not None:
        print(f"\n50 paced clients, Redis frozen {latency['seconds']:g} s "
              f"(load generator CPU {latency['load_generator_cpu_s']:.2f} s)")
        for name in ("healthz_alone", "healthz", "submit"):
            r = latency[name]
            print(f"  {name:13} n={r['n']:5}  p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms"
                  f"  max {r['max_ms']:8.2f} ms")
        print(f"  status codes {latency['status_codes']}; healthz p99 < 50 ms: "
              f"{latency['healthz_target_met']}")
    write_results("bench_faults", {"worker_kill": kills, "database_outage": outages,
                                   "frozen_broker_latency": latency})


if __name__ == "__main__":
    main()
