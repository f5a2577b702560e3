"""The multipart reader streams: memory stays at a chunk whatever the file's size."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from service.api.uploads import read_multipart
from service.errors import PayloadTooLargeError

BOUNDARY = "b0undary"
CHUNK = 64 << 10


def body_parts(file_bytes: int, seed: int = 0) -> Iterator[bytes]:
    yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="spec"\r\n\r\n'
           '{"bits": 4}\r\n'
           f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"; '
           'filename="big.onnx"\r\n\r\n').encode()
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    sent = 0
    while sent < file_bytes:
        n = min(CHUNK, file_bytes - sent)
        sent += n
        yield block[:n]
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def request_for(parts: Iterator[bytes]) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [
        (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]}

    async def receive() -> dict[str, Any]:
        chunk = next(parts, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    return Request(scope, receive)


def expected_sha(file_bytes: int) -> str:
    digest = hashlib.sha256()
    parts = list(body_parts(file_bytes))
    for part in parts[1:-1]:
        digest.update(part)
    return digest.hexdigest()


def stream_and_measure(size: int, spool_dir: Path) -> dict[str, Any]:
    """Stream ``size`` bytes through ``read_multipart``; the traced memory peak with it."""
    warm = asyncio.run(read_multipart(  # imports and first-use caches, outside the measure
        request_for(body_parts(1 << 20)), spool_dir=spool_dir, max_bytes=1 << 30,
        file_fields=frozenset({"model"}), text_fields=frozenset({"spec"})))
    warm.cleanup()
    tracemalloc.start()
    form = asyncio.run(read_multipart(
        request_for(body_parts(size)), spool_dir=spool_dir, max_bytes=1 << 30,
        file_fields=frozenset({"model"}), text_fields=frozenset({"spec"})))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    spooled = form.files["model"]
    out = {"peak": peak, "fields": form.fields, "size": spooled.size_bytes,
           "on_disk": spooled.path.stat().st_size, "filename": spooled.filename,
           "spool_name": spooled.path.name, "sha256": spooled.sha256}
    form.cleanup()
    return out


def test_a_large_upload_costs_a_chunk_of_memory(tmp_path: Path) -> None:
    # measured in a process of its own: threads of this test process would count as well
    size = 64 << 20
    code = ("import json, sys; from pathlib import Path; "
            "from tests.service.api.test_uploads_streaming import stream_and_measure; "
            f"print(json.dumps(stream_and_measure({size}, Path(sys.argv[1]))))")
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["fields"] == {"spec": '{"bits": 4}'}
    assert out["size"] == out["on_disk"] == size
    assert out["filename"] == out["spool_name"] == "big.onnx"
    assert out["sha256"] == expected_sha(size)
    assert out["peak"] < 1 << 20, f"peak {out['peak']} bytes while streaming {size}"
    assert list(tmp_path.iterdir()) == []


def test_over_the_limit_stops_and_removes_the_spool(tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLargeError, match="limit of 1000000 bytes"):
        asyncio.run(read_multipart(
            request_for(body_parts(5 << 20)), spool_dir=tmp_path, max_bytes=1_000_000,
            file_fields=frozenset({"model"}), text_fields=frozenset({"spec"})))
    assert list(tmp_path.iterdir()) == []


def test_stale_spool_folders_are_swept(tmp_path: Path) -> None:
    import os

    from service.api.uploads import sweep_stale_spools

    old, fresh = tmp_path / "upload-old", tmp_path / "upload-new"
    for folder in (old, fresh):
        folder.mkdir()
        (folder / "m.onnx").write_bytes(b"partial")
    os.utime(old, (0, 0))
    assert sweep_stale_spools(tmp_path, older_than_s=3600) == 1
    assert not old.exists() and (fresh / "m.onnx").exists()
