"""Real processes for the end-to-end tests: PostgreSQL, Redis, an S3 server, the API and
workers, each started the way an operator would (``quantserve serve`` / ``worker``).

PostgreSQL and the machine's Redis are started if they are not running; if that fails the
tests fail with the reason (they are never skipped).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PG_HOST, PG_PORT = "127.0.0.1", 5432


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for(predicate: object, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


# --- PostgreSQL ----------------------------------------------------------------------------


def ensure_postgres() -> str:
    """The user that can connect to the local PostgreSQL, starting the cluster if needed."""
    if not _port_open(PG_PORT):
        versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
        if not versions:
            raise AssertionError("PostgreSQL is not running on 127.0.0.1:5432 and not installed")
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
            check=False,
            capture_output=True,
            timeout=60,
        )
        wait_for(lambda: _port_open(PG_PORT), 30, "PostgreSQL to start")
    import psycopg

    errors = []
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=5
            ):
                return user
        except psycopg.Error as exc:
            errors.append(f"{user}: {exc}")
    raise AssertionError(f"cannot connect to PostgreSQL at {PG_HOST}:{PG_PORT}: {errors}")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway database; yields its SQLAlchemy URL and drops it afterwards."""
    import psycopg

    user = ensure_postgres()
    name = f"quantserve_test_{secrets.token_hex(6)}"
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Redis -----------------------------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` on a free port, with an append-only file in ``folder`` so
    that what it had accepted survives a stop and start (as a deployed Redis would)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise AssertionError("redis-server is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _port_open(self.port), 10, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
        wait_for(lambda: not _port_open(self.port), 10, "redis-server to stop")


def ensure_machine_redis() -> None:
    """The machine's Redis on 6379, started if it is not running."""
    if _port_open(6379):
        return
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=False,
        timeout=30,
    )
    wait_for(lambda: _port_open(6379), 10, "the machine's Redis on port 6379")


# --- the service's processes ---------------------------------------------------------------


class Proc:
    """A child process whose output goes to a log file (shown when a test fails)."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=ROOT,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a kill reaches the pool too
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill_hard(self) -> None:
        """SIGKILL the whole process group, as a lost machine would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, grace_s: float = 20.0) -> None:
        # Longer than serve's own grace for its worker (QUANTSERVE_WORKER_STOP_GRACE_S, 10 s):
        # killed first, serve could not kill a worker whose shutdown hangs, and the worker
        # outlived the test.
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.kill_hard()
        # The pool processes of a prefork worker are in the same group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._file.close()

    def tail(self, n: int = 60) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(lines[-n:])


class Service:
    """The API and its workers for one set of ``QUANTSERVE_*`` variables."""

    def __init__(self, env: Mapping[str, str], folder: Path) -> None:
        # The pool processes' warm-up is off unless a test turns it on: each of the suite's
        # many worker starts would spend a CPU second beside the tests' timed windows.
        self.env = {**os.environ, "QUANTSERVE_WORKER_WARM_UP": "false", **env,
                    "PYTHONUNBUFFERED": "1"}  # fmt: skip
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[Proc] = []
        self.api: Proc | None = None

    def _cli(self, name: str, *args: str) -> Proc:
        proc = Proc(name, [sys.executable, "-m", "service.cli", *args], self.env, self.folder)
        self.procs.append(proc)
        return proc

    def start_api(self, *, with_worker: bool = False, api_workers: int = 1) -> Proc:
        args = ["serve", "--port", str(self.port), "--workers", str(api_workers)]
        if not with_worker:
            args.append("--no-worker")
        self.api = self._cli("api", *args)

        def healthy() -> bool:
            assert self.api is not None and self.api.alive(), self.logs()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            return False

        wait_for(healthy, 60, f"the API on {self.url}")
        return self.api

    def start_worker(self, name: str = "worker", concurrency: int = 1) -> Proc:
        return self._cli(
            name,
            "worker",
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}-{secrets.token_hex(3)}@%h",
        )

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
