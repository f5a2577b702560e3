"""Fixtures of the API tests: real PostgreSQL, Redis and an S3 server (moto), tmp folders.

PostgreSQL and Redis are the machine's (127.0.0.1:5432 trust auth, 127.0.0.1:6379); when one
does not answer, the fixture tries to start it and otherwise fails with the command to run.
Each session works in a throwaway PostgreSQL database and a random Redis DB number.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.2)
    return False


def _start(command: str) -> None:
    subprocess.run(command, shell=True, check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    if not port_open(5432):
        versions = " ".join(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() \
            else ""
        _start(f"pg_ctlcluster --skip-systemctl-redirect {versions} main start")
        if not _wait_port(5432, 20):
            pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 and could not be started: "
                        "run `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) "
                        "main start`")
    return PG_ADMIN


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A throwaway database for the session, dropped at the end."""
    name = f"quantserve_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis, on a random DB number so that other users are not disturbed."""
    if not port_open(6379):
        _start('redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" '
               "--appendonly no")
        if not _wait_port(6379, 10):
            pytest.fail("Redis is not reachable at 127.0.0.1:6379 and could not be started: "
                        'run `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ""'
                        " --appendonly no`")
    return f"redis://127.0.0.1:6379/{random.randint(1, 15)}"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with dummy credentials in the environment."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Embedded settings in ``tmp_path``; keyword arguments override fields."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path}/quantserve.db",
            "broker_url": f"sqla+sqlite:///{tmp_path}/broker.db",
            "storage_path": str(tmp_path / "storage"),
            "max_upload_bytes": 4 << 20,
            "rate_limit_per_minute": 0,
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as c:
        yield c
