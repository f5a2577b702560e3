"""Jobs per minute with 1, 2 and 4 worker processes, and what each job costs the shared parts.

The deployed shape on loopback: PostgreSQL (a throwaway database on 127.0.0.1:5432), a private
``redis-server`` as the broker (so that its command counts are this run's alone), local
storage shared by the API and the workers, ``quantserve serve --no-worker`` and N processes of
``quantserve worker --concurrency 1`` (celery app ``service.queue.celery_app:app``).

For each N: the workers are started and warmed (one job each: imports, first sessions), then
``--jobs`` jobs are submitted at once (``POST /v1/jobs/batch``) and the clock runs until the
last is final. Reported: jobs/min, per-worker efficiency (jobs/min ÷ (N × jobs/min of one
worker)), the workers' CPU seconds per job, and what each job cost the shared parts:
PostgreSQL transactions (reads included; the benchmark's own polls taken out) and rows
written per table (``pg_stat_database``, ``pg_stat_user_tables`` of the run's database), Redis
commands (``INFO commandstats`` of the private server, by command), both measured over the
batch and divided by its jobs, and the connections open to each at the end (API and
workers; the pools keep theirs). Baseline in the same run: ``quantcore.run_job`` called
directly on the same model and spec (seconds a job; the ideal jobs/min of N workers is
N × 60 / that, until the cores run out).

The job: a realistic small one, a 2 M-parameter Conv+MatMul model (``tests.models.large``)
at the default 4-bit spec, with the fidelity check on synthetic inputs as every job has.

    python -m bench.bench_scaleout [--workers 1 2 4] [--jobs 24] [--params 2000000]

Writes ``bench/results/bench_scaleout.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import onnx
import psycopg
import redis

from bench.common import write_results
from bench.loadgen import process_group_cpu_s
from quantcore import JobInput, JobKind, run_job
from tests import models
from tests.workers.services import RedisServer, Service, postgres_database

SPEC: dict[str, Any] = {"bits": 4}
FINAL = {"succeeded", "failed", "cancelled"}
POLL_S = 0.2


def _pg_counts(url: str) -> dict[str, int]:
    """This database's committed transactions (reads count too) and, per table, rows
    inserted, updated and deleted (``pg_stat_database``, ``pg_stat_user_tables``)."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database"
                           " WHERE datname = current_database()").fetchone()
        assert row is not None
        counts = {"commits": int(row[0])}
        for table, ins, upd, dele in conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
        ):
            counts[f"{table}.inserted"] = int(ins)
            counts[f"{table}.updated"] = int(upd)
            counts[f"{table}.deleted"] = int(dele)
    return counts


def _pg_connections(url: str) -> int:
    """Connections open to this database now (the pools keep theirs open between uses), the
    sampling one excluded."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) - 1 FROM pg_stat_activity"
                           " WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def _redis_counts(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def _wait_final(pg_url: str, ids: list[str], timeout_s: float) -> tuple[dict[str, str], int]:
    """The jobs' final statuses, read from the job table once a second (not through the API,
    whose reads would count in the database's transactions); also the number of reads."""
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.monotonic() + timeout_s
    reads = 0
    states: dict[str, str] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute("SELECT id, status FROM jobs WHERE id = ANY(%s)", (ids,))
            reads += 1
            states = {i: s for i, s in rows if s in FINAL}
            if len(states) == len(ids):
                break
            time.sleep(POLL_S)
    return states, reads


def _submit(client: httpx.Client, model_id: str, n: int) -> list[str]:
    body = {"jobs": [{"model_id": model_id, "spec": SPEC} for _ in range(n)]}
    response = client.post("/v1/jobs/batch", json=body)
    response.raise_for_status()
    return [j["id"] for j in response.json()["data"]]


def _direct_s(model: Path, folder: Path, repeats: int = 3) -> float:
    times = []
    for i in range(repeats + 1):  # the first warms the imports
        out = folder / f"direct-{i}"
        start = time.perf_counter()
        run_job(JobInput(kind=JobKind.QUANTIZE, model_path=model, spec=dict(SPEC)), out)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def bench_workers(n: int, env: dict[str, str], folder: Path, model: Path, jobs: int,
                  pg_url: str, broker: redis.Redis) -> dict[str, Any]:  # fmt: skip
    service = Service(env, folder)
    try:
        service.start_api()
        workers = [service.start_worker(f"w{i}") for i in range(n)]
        with service.client() as client:
            model_id = client.post(
                "/v1/models", files={"file": ("model.onnx", model.read_bytes())}
            ).json()["id"]
            warm, _ = _wait_final(pg_url, _submit(client, model_id, 2 * n), 300)
            assert set(warm.values()) == {"succeeded"}, warm
            time.sleep(1.0)  # the last acknowledgements and heartbeats land before counting
            pg0, redis0 = _pg_counts(pg_url), _redis_counts(broker)
            cpu0 = sum(process_group_cpu_s(w.pid) or 0.0 for w in workers)
            start = time.perf_counter()
            ids = _submit(client, model_id, jobs)
            states, reads = _wait_final(pg_url, ids, 900)
            wall = time.perf_counter() - start
            cpu = sum(process_group_cpu_s(w.pid) or 0.0 for w in workers) - cpu0
            pg1, redis1 = _pg_counts(pg_url), _redis_counts(broker)
            connections = _pg_connections(pg_url)
            redis_clients = int(broker.info("clients")["connected_clients"]) - 1
    finally:
        service.stop()
    succeeded = sum(1 for s in states.values() if s == "succeeded")
    commands = {k: redis1.get(k, 0) - redis0.get(k, 0) for k in redis1}
    commands = {k: v for k, v in sorted(commands.items(), key=lambda kv: -kv[1]) if v > 0}
    return {
        "workers": n, "jobs": jobs, "succeeded": succeeded, "wall_s": wall,
        "jobs_per_min": 60.0 * succeeded / wall, "worker_cpu_s_per_job": cpu / max(jobs, 1),
        "pg_per_job": {k: (pg1[k] - pg0.get(k, 0) - (reads + 1 if k == "commits" else 0))
                       / jobs for k in pg1 if pg1[k] != pg0.get(k, 0)},
        "redis_commands_per_job": sum(commands.values()) / jobs,
        "redis_by_command_per_job": {k: v / jobs for k, v in list(commands.items())[:8]},
        "pg_connections": connections, "redis_connections": redis_clients,
        "load_average": os.getloadavg(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--params", type=int, default=2_000_000)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp, \
            postgres_database() as pg_url:  # fmt: skip
        root = Path(tmp)
        model = root / "model.onnx"
        onnx.save(models.large(args.params, seed=1), str(model))
        direct = _direct_s(model, root)
        broker_server = RedisServer(root / "redis")
        broker_server.start()
        try:
            broker = redis.Redis.from_url(broker_server.url)
            for n in args.workers:
                folder = root / f"n{n}"
                folder.mkdir()
                env = {
                    "QUANTSERVE_DATABASE_URL": pg_url,
                    "QUANTSERVE_BROKER_URL": broker_server.url,
                    "QUANTSERVE_STORAGE": "local",
                    "QUANTSERVE_STORAGE_PATH": str(root / "storage"),
                    "QUANTSERVE_RATE_LIMIT_PER_MINUTE": "0",
                    "QUANTSERVE_LOG_LEVEL": "WARNING",
                }
                rows.append(bench_workers(n, env, folder, model, args.jobs, pg_url, broker))
                r = rows[-1]
                print(f"{n} workers: {r['jobs_per_min']:.1f} jobs/min "
                      f"({r['succeeded']}/{r['jobs']} in {r['wall_s']:.1f} s)", flush=True)
        finally:
            broker_server.stop()
    one = next((r["jobs_per_min"] for r in rows if r["workers"] == 1), None)
    cores = os.cpu_count() or 1
    print(f"\nJob: {args.params / 1e6:.0f}M-parameter Conv+MatMul model, spec {SPEC}; "
          f"run_job directly: {direct:.2f} s a job ({60 / direct:.0f} jobs/min on one process); "
          f"{cores} cores")
    print(f"{'workers':>7} {'jobs/min':>9} {'ideal':>6} {'eff/worker':>10} {'CPU s/job':>9} "
          f"{'PG commits/job':>14} {'rows/job':>8} {'Redis cmds/job':>14} {'PG conns':>8} "
          f"{'Redis conns':>11}")
    for r in rows:
        ideal = min(r["workers"], cores) * 60.0 / direct
        r["ideal_jobs_per_min"] = ideal
        r["efficiency_per_worker"] = (r["jobs_per_min"] / (r["workers"] * one)) if one else None
        pg = r["pg_per_job"]
        eff = "-" if r["efficiency_per_worker"] is None else f"{r['efficiency_per_worker']:.2f}"
        print(f"{r['workers']:>7} {r['jobs_per_min']:9.1f} {ideal:6.0f} {eff:>10} "
              f"{r['worker_cpu_s_per_job']:9.2f} {pg['commits']:14.1f} "
              f"{sum(v for k, v in pg.items() if k != 'commits'):8.1f} "
              f"{r['redis_commands_per_job']:14.1f} {r['pg_connections']:8d} "
              f"{r['redis_connections']:11d}")
    print("ideal: min(workers, cores) x 60 / direct s; eff/worker: jobs/min / (workers x "
          "jobs/min of one)")
    for r in rows[-1:]:
        print(f"PostgreSQL per job ({r['workers']} workers): " + ", ".join(
            f"{k} {v:.1f}" for k, v in r["pg_per_job"].items()))
        print(f"Redis commands per job ({r['workers']} workers), most frequent: "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["redis_by_command_per_job"].items()))
    write_results("bench_scaleout", {"direct_s_per_job": direct, "cores": cores,
                                     "params": args.params, "spec": SPEC, "rows": rows})


if __name__ == "__main__":
    main()
