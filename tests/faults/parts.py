"""The parts the fault tests break, each started on its own ports so that breaking it
disturbs nothing else: a PostgreSQL cluster (initdb/pg_ctl, as the ``postgres`` user when
run as root), a ``redis-server``, moto's S3 server as a process of its own (so it can be
frozen) and a small tmpfs (a full disk). Each can be stopped, started again and frozen
(SIGSTOP) and thawed (SIGCONT)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.workers.services import _port_open, free_port, wait_for


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    if found is None:
        raise AssertionError("PostgreSQL's pg_ctl is not installed (apt-get install postgresql)")
    return Path(found).parent


class PrivatePostgres:
    """A PostgreSQL cluster of its own in a temporary folder, trust auth on 127.0.0.1."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="qs-faults-pg-"))
        self.port = free_port()
        self.bin = _pg_bin()
        self.as_postgres = os.geteuid() == 0  # PostgreSQL refuses to run as root
        if self.as_postgres:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if self.as_postgres:
            argv = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in argv)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            raise AssertionError(f"{tool} failed: {done.stdout}\n{done.stderr}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-o", options,
                  "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        wait_for(lambda: not _port_open(self.port), 10, "PostgreSQL to stop")

    def create_database(self) -> str:
        import psycopg

        name = f"qs_{secrets.token_hex(4)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        with contextlib.suppress(AssertionError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class MotoProcess:
    """moto's S3 server in a process of its own, on a free loopback port."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / f"moto-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: _port_open(self.port), 30, "moto's S3 server")

    def create_bucket(self) -> str:
        import boto3

        bucket = f"qs-faults-{secrets.token_hex(4)}"
        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str, prefix: str) -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def stop(self) -> None:
        thaw(self.process.pid)
        self.process.kill()
        self.process.wait()
        self.log.close()


def freeze(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def thaw(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The process stopped (SIGSTOP): its sockets accept connections and never answer."""
    freeze(pid)
    try:
        yield
    finally:
        thaw(pid)


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (needs root, as CI and this machine run)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode:
        raise AssertionError(f"cannot mount a tmpfs on {folder} (root needed): {done.stderr}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30,
                       check=False)
