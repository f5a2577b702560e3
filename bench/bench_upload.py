"""Upload streaming through the API, against hashing and copying the same file locally.

A uvicorn server (embedded settings in a temp folder) receives ``POST /v1/datasets`` with an
``.npz`` of ``--mb`` MiB, sent by httpx from a file on disk. The baseline is the floor of
what the endpoint must do with the bytes, measured in the same run: read the file in 1 MiB
chunks, sha256 them and write them to a new file. The ratio is upload time / baseline time
(1.0 would mean HTTP, multipart parsing and storage cost nothing on top).

Memory: the server's peak resident set (VmHWM) minus its resident set before the upload;
streaming keeps this near a chunk whatever the file size, where reading the body whole
would add the file's size.

Run: ``python -m bench.bench_upload [--mb 256] [--repeats 2]``.
Writes ``bench/results/bench_upload.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.common import free_port, write_results

CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class Result:
    size_mb: float
    upload_s: float
    baseline_s: float
    ratio: float
    upload_mb_per_s: float
    server_rss_growth_mb: float
    baseline: str


def make_npz(path: Path, mb: int, seed: int = 0) -> None:
    n = mb * (1 << 20) // 4
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.standard_normal(n, dtype=np.float32))


def hash_and_copy(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


def start_server(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "QUANTSERVE_DATABASE_URL": f"sqlite:///{tmp}/q.db",
        "QUANTSERVE_BROKER_URL": f"sqla+sqlite:///{tmp}/broker.db",
        "QUANTSERVE_STORAGE_PATH": str(tmp / "storage"),
        "QUANTSERVE_RATE_LIMIT_PER_MINUTE": "0",
        "QUANTSERVE_LOG_LEVEL": "WARNING",
        "QUANTSERVE_MAX_UPLOAD_BYTES": str(16 << 30),
    }
    code = ("import uvicorn; from service.api.app import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env,
                            cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the API did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        # one file per repeat: the same bytes twice would be deduplicated, not stored
        sources = [tmp / f"eval{i}.npz" for i in range(args.repeats)]
        for i, path in enumerate(sources):
            make_npz(path, args.mb, seed=i)
        source = sources[0]
        size = source.stat().st_size
        expected = hash_and_copy(source, tmp / "warm.npz")
        baseline = min(_time(lambda: hash_and_copy(source, tmp / "copy.npz"))
                       for _ in range(args.repeats))
        port = free_port()
        server = start_server(tmp, port)
        try:
            rss_before = rss_kb(server.pid, "VmRSS")
            uploads = []
            for i, path in enumerate(sources):
                start = time.perf_counter()
                with open(path, "rb") as f:
                    r = httpx.post(f"http://127.0.0.1:{port}/v1/datasets",
                                   files={"file": ("eval.npz", f)}, timeout=600)
                uploads.append(time.perf_counter() - start)
                if r.status_code != 201:
                    raise RuntimeError(f"upload failed: {r.status_code} {r.text[:300]}")
                if i == 0 and r.json()["sha256"] != expected:
                    raise RuntimeError("the server's sha256 differs from the file's")
            growth_mb = (rss_kb(server.pid, "VmHWM") - rss_before) / 1024
        finally:
            server.terminate()
            server.wait(timeout=30)
    upload = min(uploads)
    result = Result(size_mb=size / (1 << 20), upload_s=upload, baseline_s=baseline,
                    ratio=upload / baseline, upload_mb_per_s=size / (1 << 20) / upload,
                    server_rss_growth_mb=growth_mb,
                    baseline="read, sha256 and write the same file locally (1 MiB chunks)")
    print(f"{'size MiB':>9} {'upload s':>9} {'baseline s':>11} {'ratio':>6} {'MiB/s':>7} "
          f"{'server RSS growth MiB':>22}")
    print(f"{result.size_mb:9.0f} {result.upload_s:9.2f} {result.baseline_s:11.2f} "
          f"{result.ratio:6.2f} {result.upload_mb_per_s:7.0f} {result.server_rss_growth_mb:22.1f}")
    write_results("bench_upload", asdict(result))
    return 0


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
