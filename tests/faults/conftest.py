"""Fixtures of the fault suite: private servers to break, and the service's two shapes on
them. See ``tests/faults/parts.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.parts import MotoProcess, PrivatePostgres
from tests.workers.conftest import S3_CREDENTIALS, embedded_env, service_factory
from tests.workers.services import RedisServer, Service

__all__ = ["service_factory"]

# Short waits so that the suite runs in minutes; the defaults are measured by
# bench/bench_faults.py.
FAST = {
    "QUANTSERVE_HEARTBEAT_INTERVAL_S": "1",
    "QUANTSERVE_HEARTBEAT_TIMEOUT_S": "8",
    "QUANTSERVE_REAPER_INTERVAL_S": "1",
    "QUANTSERVE_BROKER_VISIBILITY_TIMEOUT_S": "20",
    "QUANTSERVE_READINESS_INTERVAL_S": "0.5",
    "QUANTSERVE_STORAGE_TIMEOUT_S": "2",
    "QUANTSERVE_DEPENDENCY_RETRY_S": "120",
    "QUANTSERVE_LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoProcess]:
    server = MotoProcess(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            import os
            import signal

            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def deployed(
    service_factory: Callable[[dict[str, str]], Service], pg_cluster: PrivatePostgres,
    moto: MotoProcess, redis: RedisServer, tmp_path: Path,
) -> Callable[..., Service]:
    """The deployed shape on private PostgreSQL, Redis and S3; ``extra`` adds variables."""

    def make(extra: dict[str, str] | None = None) -> Service:
        env = {
            **S3_CREDENTIALS, **FAST,
            "QUANTSERVE_DATABASE_URL": pg_cluster.create_database(),
            "QUANTSERVE_BROKER_URL": redis.url,
            "QUANTSERVE_STORAGE": "s3",
            "QUANTSERVE_S3_ENDPOINT_URL": moto.url,
            "QUANTSERVE_S3_BUCKET": moto.create_bucket(),
            "QUANTSERVE_STORAGE_PATH": str(tmp_path / "spool"),
            "QUANTSERVE_AUTH_ENABLED": "false",
            "QUANTSERVE_RATE_LIMIT_PER_MINUTE": "0",
            **(extra or {}),
        }
        return service_factory(env)

    return make


@pytest.fixture
def embedded(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path
) -> Callable[..., Service]:
    """The embedded shape (SQLite, SQLite broker, local storage); ``extra`` adds variables."""

    def make(extra: dict[str, str] | None = None) -> Service:
        return service_factory({**embedded_env(tmp_path), **FAST, **(extra or {})})

    return make
