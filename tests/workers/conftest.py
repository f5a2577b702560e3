from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings
from tests.workers.services import RedisServer, Service, free_port, postgres_database

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def embedded_env(folder: Path) -> dict[str, str]:
    """The embedded shape: SQLite job store, SQLite broker, local storage."""
    return {
        "QUANTSERVE_DATABASE_URL": f"sqlite:///{folder}/quantserve.db",
        "QUANTSERVE_BROKER_URL": f"sqla+sqlite:///{folder}/broker.db",
        "QUANTSERVE_STORAGE": "local",
        "QUANTSERVE_STORAGE_PATH": str(folder / "storage"),
        "QUANTSERVE_AUTH_ENABLED": "false",
        "QUANTSERVE_RATE_LIMIT_PER_MINUTE": "0",
        "QUANTSERVE_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """In-process settings of the embedded shape, for tests that call the app and the task."""
    return Settings(
        database_url=f"sqlite:///{tmp_path}/quantserve.db",
        broker_url=f"sqla+sqlite:///{tmp_path}/broker.db",
        storage="local",
        storage_path=str(tmp_path / "storage"),
        rate_limit_per_minute=0,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Service]]:
    """Builds ``Service``s (API and worker processes) and stops them all afterwards."""
    made: list[Service] = []

    def make(env: dict[str, str]) -> Service:
        folder = tmp_path / f"service{len(made)}"
        folder.mkdir()
        service = Service(env, folder)
        made.append(service)
        return service

    yield make
    for service in made:
        service.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on a loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import boto3

    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = f"quantserve-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return bucket


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Short job limits, and a short Redis visibility timeout (15 s) for tests that wait it out.
SHORT_TIME_LIMITS = {"QUANTSERVE_JOB_SOFT_TIME_LIMIT_S": "9", "QUANTSERVE_JOB_TIME_LIMIT_S": "10",
                     "QUANTSERVE_BROKER_VISIBILITY_TIMEOUT_S": "15"}


@pytest.fixture
def redis_service(
    service_factory: Callable[[dict[str, str]], Service],
    redis_server: RedisServer,
    tmp_path: Path,
) -> Callable[..., Service]:
    """Starts the API of the embedded shape with the Redis broker; ``extra`` adds variables."""

    def start(extra: dict[str, str] | None = None) -> Service:
        env = {**embedded_env(tmp_path), "QUANTSERVE_BROKER_URL": redis_server.url, **(extra or {})}
        service = service_factory(env)
        service.start_api()
        return service

    return start


@pytest.fixture
def deployed_env(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer, s3_endpoint: str, s3_bucket: str
) -> dict[str, str]:
    """The deployed shape: PostgreSQL, Redis and S3, each a real server."""
    return {
        **S3_CREDENTIALS,
        "QUANTSERVE_DATABASE_URL": postgres_url,
        "QUANTSERVE_BROKER_URL": redis_server.url,
        "QUANTSERVE_STORAGE": "s3",
        "QUANTSERVE_S3_ENDPOINT_URL": s3_endpoint,
        "QUANTSERVE_S3_BUCKET": s3_bucket,
        "QUANTSERVE_STORAGE_PATH": str(tmp_path / "spool"),
        "QUANTSERVE_AUTH_ENABLED": "false",
        "QUANTSERVE_RATE_LIMIT_PER_MINUTE": "0",
        "QUANTSERVE_LOG_LEVEL": "INFO",
    }
