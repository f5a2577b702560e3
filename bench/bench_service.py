"""The service's own cost: submission latency and throughput, and a whole job's overhead.

Everything runs for real on loopback: ``quantserve serve --no-worker`` (uvicorn, one process
or ``--api-workers`` of them) and ``quantserve worker`` (prefork, one process), on the embedded
shape (SQLite job store, SQLite broker, local storage) and, when a Redis answers on
127.0.0.1:6379, on Redis too (a random database number, flushed afterwards).

1. Submissions: ``--requests`` ``POST /v1/jobs`` from ``--clients`` concurrent clients, each
   on its own keep-alive connection (no worker running, so only the API is measured): p50 and
   p99 latency and accepted jobs per second, under a saturating load (closed loop) and a paced
   one (``--rate`` per second, open loop). Baseline in the same run: ``GET /healthz`` under
   the same load (the HTTP floor of the same server); reported as the ratio
   p99(submit) / p99(healthz). Also recorded: the API's and the load generator's CPU time per
   request. Target: p99 < 100 ms.

   The clients are ``bench.loadgen``'s (a minimal HTTP/1.1 client; why not httpx: there).

   In a closed loop, Little's law fixes the mean latency at clients / throughput, and
   p99 >= mean: p99 < 100 ms with 50 clients needs more than 500 accepted jobs/s. The
   saturating rows print that bound (``needed/s``) and the mean the measured throughput
   implies (``Little ms``).
2. A whole job: submit → ``succeeded`` as a caller sees it (polling every 50 ms) against
   ``quantcore.run_job`` called directly on the same model and spec in this process.
   overhead = service − direct. Target: overhead < 10 % of direct + 0.5 s.

Run: ``python -m bench.bench_service [--clients 50] [--requests 1000] [--rate 50]
[--api-workers 1 2] [--params 8000000]``: the submission loads run once per count of API
processes (``--api-workers``), the whole job with one.
Writes ``bench/results/bench_service.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import onnx

from bench import loadgen
from bench.common import write_results
from bench.loadgen import percentile
from quantcore import JobInput, JobKind, run_job
from tests import models
from tests.workers.conftest import embedded_env
from tests.workers.services import Service, ensure_machine_redis

SPEC = {"method": "uniform", "bits": 4, "granularity": "layer"}
TARGET_P99_S = 0.1


@dataclass(frozen=True, kw_only=True)
class SubmitRow:
    shape: str
    load: str  # "saturating" (closed loop) or "paced" (open loop at offered_per_s)
    api_workers: int
    clients: int
    requests: int
    offered_per_s: float | None
    accepted: int
    p50_ms: float
    p99_ms: float
    jobs_per_s: float
    healthz_p50_ms: float  # the baseline: GET /healthz under the same load
    healthz_p99_ms: float
    p99_vs_healthz: float
    target_met: bool  # p99 < 100 ms
    server_cpu_ms_per_job: float | None  # CPU time of the API's processes per submission
    client_cpu_ms_per_request: float  # the load generator's
    # Closed loop only: the mean latency the throughput implies (Little's law: clients /
    # jobs_per_s; p99 is at least that), and the jobs/s the target needs (clients / 0.1 s).
    little_mean_ms: float | None
    needed_jobs_per_s: float | None


@dataclass(frozen=True, kw_only=True)
class JobRow:
    shape: str
    n_params: int
    direct_s: float
    service_s: float
    overhead_s: float
    allowed_s: float  # 10 % of direct + 0.5 s
    service_vs_direct: float
    target_met: bool


def _upload(client: httpx.Client, path: Path) -> str:
    with open(path, "rb") as f:
        response = client.post("/v1/models", files={"file": (path.name, f)})
    response.raise_for_status()
    return str(response.json()["id"])


def bench_submissions(
    shape: str, env: dict[str, str], folder: Path, args: Any, api_workers: int
) -> list[SubmitRow]:
    service = Service(env, folder)
    rows = []
    try:
        service.start_api(api_workers=api_workers)
        small = folder / "small.onnx"
        onnx.save(models.mlp((16, 32, 10)), str(small))
        with service.client() as client:
            model_id = _upload(client, small)
        body = {"model_id": model_id, "spec": SPEC}
        n = args.clients
        assert service.api is not None
        pgid = service.api.pid  # the API runs in a process group of its own
        # Warm-up: connections, caches, the first SQLite pages.
        asyncio.run(loadgen.load(service.url, "POST", "/v1/jobs", body, clients=n, total=n))
        for load, rate in (("saturating", None), ("paced", args.rate)):
            health = asyncio.run(
                loadgen.load(
                    service.url, "GET", "/healthz", None, clients=n, total=args.requests, rate=rate
                )
            )
            jobs = asyncio.run(
                loadgen.load(
                    service.url, "POST", "/v1/jobs", body, clients=n, total=args.requests,
                    rate=rate, server_pgid=pgid,
                )
            )
            p99 = percentile(jobs.latencies, 99) * 1e3
            health_p99 = percentile(health.latencies, 99) * 1e3
            jobs_per_s = jobs.accepted / jobs.wall_s
            closed = rate is None
            rows.append(
                SubmitRow(
                    shape=shape,
                    load=load,
                    api_workers=api_workers,
                    clients=n,
                    requests=args.requests,
                    offered_per_s=rate,
                    accepted=jobs.accepted,
                    p50_ms=percentile(jobs.latencies, 50) * 1e3,
                    p99_ms=p99,
                    jobs_per_s=jobs_per_s,
                    healthz_p50_ms=percentile(health.latencies, 50) * 1e3,
                    healthz_p99_ms=health_p99,
                    p99_vs_healthz=p99 / health_p99,
                    target_met=p99 < TARGET_P99_S * 1e3,
                    server_cpu_ms_per_job=None if jobs.server_cpu_s is None
                    else jobs.server_cpu_s / args.requests * 1e3,
                    client_cpu_ms_per_request=jobs.client_cpu_s / args.requests * 1e3,
                    little_mean_ms=n / jobs_per_s * 1e3 if closed else None,
                    needed_jobs_per_s=n / TARGET_P99_S if closed else None,
                )
            )
    finally:
        service.stop()
    return rows


def _direct(model: Path, folder: Path) -> float:
    out = folder / f"direct-{secrets.token_hex(3)}"
    out.mkdir()
    start = time.perf_counter()
    run_job(JobInput(kind=JobKind.QUANTIZE, model_path=model, spec=dict(SPEC)), out)
    return time.perf_counter() - start


def _through_service(client: httpx.Client, model_id: str) -> float:
    start = time.perf_counter()
    response = client.post("/v1/jobs", json={"model_id": model_id, "spec": SPEC})
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    if job["status"] != "succeeded":
        raise RuntimeError(f"benchmark job {job_id} ended {job['status']}: {job['error']}")
    return elapsed


def bench_job(shape: str, env: dict[str, str], folder: Path, args: Any) -> JobRow:
    model = folder / "large.onnx"
    onnx.save(models.large(args.params, seed=0), str(model))
    service = Service(env, folder)
    direct, through = [], []
    try:
        service.start_api()
        service.start_worker()
        with service.client() as client:
            model_id = _upload(client, model)
            # Warm-up of both sides: imports, first pages.
            _through_service(client, model_id)
            _direct(model, folder)
            for _ in range(args.repeats):
                direct.append(_direct(model, folder))
                through.append(_through_service(client, model_id))
    finally:
        service.stop()
    d, s = statistics.median(direct), statistics.median(through)
    allowed = 0.1 * d + 0.5
    return JobRow(
        shape=shape,
        n_params=args.params,
        direct_s=d,
        service_s=s,
        overhead_s=s - d,
        allowed_s=allowed,
        service_vs_direct=s / d,
        target_met=s - d < allowed,
    )


def _shapes(root: Path) -> list[tuple[str, dict[str, str]]]:
    shapes = [("embedded", embedded_env(root / "embedded"))]
    try:
        ensure_machine_redis()
    except AssertionError:
        return shapes
    db = 1 + secrets.randbelow(15)
    redis_env = {
        **embedded_env(root / "redis"),
        "QUANTSERVE_BROKER_URL": f"redis://127.0.0.1:6379/{db}",
    }
    return [*shapes, ("redis broker", redis_env)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=50.0, help="offered submissions per second of the paced load"
    )
    parser.add_argument("--params", type=int, default=8_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--api-workers", type=int, nargs="+", default=[1, 2],
        help="uvicorn processes of the submission loads, one set of rows for each count",
    )
    args = parser.parse_args()

    submit_rows, job_rows = [], []
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        for shape, env in _shapes(root):
            parts = [*(f"submit-{n}" for n in args.api_workers), "job"]
            for part in parts:
                folder = root / shape.replace(" ", "-") / part
                folder.mkdir(parents=True)
                env_here = {**env, **_fresh_stores(env, folder)}
                if part == "job":
                    job_rows.append(bench_job(shape, env_here, folder, args))
                else:
                    workers = int(part.removeprefix("submit-"))
                    submit_rows += bench_submissions(shape, env_here, folder, args, workers)
                _flush_redis(env)  # the submissions' messages must not reach the next part

    _print_tables(args, submit_rows, job_rows)
    print()
    write_results(
        "bench_service",
        {
            "baselines": {
                "submissions": "GET /healthz under the same load",
                "job": "quantcore.run_job called directly",
            },
            "submissions": [asdict(r) for r in submit_rows],
            "jobs": [asdict(j) for j in job_rows],
        },
    )


def _print_tables(args: Any, submit_rows: list[SubmitRow], job_rows: list[JobRow]) -> None:
    print(f"\nSubmissions: {args.clients} concurrent clients, {args.requests} requests each load")
    print(
        f"{'shape':<14}{'API':>4} {'load':<12}{'p50 ms':>8}{'p99 ms':>8}{'jobs/s':>8}"
        f"{'healthz p99':>12}{'p99/healthz':>12}{'p99<100':>8}{'API ms/job':>11}"
        f"{'Little ms':>10}{'needed/s':>9}"
    )
    for r in submit_rows:
        load = r.load if r.offered_per_s is None else f"{r.offered_per_s:g}/s"
        cpu = "-" if r.server_cpu_ms_per_job is None else f"{r.server_cpu_ms_per_job:.2f}"
        little = "-" if r.little_mean_ms is None else f"{r.little_mean_ms:.0f}"
        needed = "-" if r.needed_jobs_per_s is None else f"{r.needed_jobs_per_s:.0f}"
        print(
            f"{r.shape:<14}{r.api_workers:>4} {load:<12}"
            f"{r.p50_ms:8.1f}{r.p99_ms:8.1f}{r.jobs_per_s:8.0f}"
            f"{r.healthz_p99_ms:12.1f}{r.p99_vs_healthz:12.2f}{r.target_met!s:>8}{cpu:>11}"
            f"{little:>10}{needed:>9}"
        )
    print(
        "Closed loop (saturating): mean latency = clients / jobs/s (Little ms) and p99 >= mean, "
        f"so p99 < {TARGET_P99_S * 1e3:.0f} ms needs more than needed/s accepted jobs/s. "
        "API: uvicorn processes; API ms/job: their CPU time per submission."
    )
    print(
        f"\nWhole job ({args.params / 1e6:.0f}M params, {SPEC}) against run_job called "
        f"directly, median of {args.repeats}"
    )
    print(
        f"{'shape':<14}{'direct s':>10}{'service s':>11}"
        f"{'overhead s':>12}{'allowed s':>11}{'ratio':>8}{'met':>6}"
    )
    for j in job_rows:
        print(
            f"{j.shape:<14}{j.direct_s:10.2f}{j.service_s:11.2f}"
            f"{j.overhead_s:12.2f}{j.allowed_s:11.2f}{j.service_vs_direct:8.2f}"
            f"{j.target_met!s:>6}"
        )


def _fresh_stores(env: dict[str, str], folder: Path) -> dict[str, str]:
    """Each part gets its own database, embedded broker file and storage."""
    fresh = {
        "QUANTSERVE_DATABASE_URL": f"sqlite:///{folder}/quantserve.db",
        "QUANTSERVE_STORAGE_PATH": str(folder / "storage"),
    }
    if env["QUANTSERVE_BROKER_URL"].startswith("sqla+"):
        fresh["QUANTSERVE_BROKER_URL"] = f"sqla+sqlite:///{folder}/broker.db"
    return fresh


def _flush_redis(env: dict[str, str]) -> None:
    url = env["QUANTSERVE_BROKER_URL"]
    if url.startswith("redis://"):
        import redis

        redis.Redis.from_url(url).flushdb()


if __name__ == "__main__":
    main()
