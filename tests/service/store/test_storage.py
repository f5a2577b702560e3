"""LocalStorage and S3Storage (against moto's S3 server): one behaviour, two back ends."""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.store.storage import LocalStorage, S3Storage, Storage, StorageError


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    s3 = S3Storage(bucket=f"b-{uuid.uuid4().hex[:12]}", endpoint_url=endpoint)
    s3.ensure_bucket()
    return s3


def chunks(total: int, size: int = 100_000) -> Iterator[bytes]:
    rng = os.urandom
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield rng(n)


def test_write_hashes_and_reads_back(storage: Storage) -> None:
    parts = list(chunks(9 << 20))  # over boto3's 8 MiB multipart threshold
    stored = storage.write("blobs/a.onnx", iter(parts))
    data = b"".join(parts)
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.exists("blobs/a.onnx")
    assert b"".join(storage.iter_bytes("blobs/a.onnx", 1 << 16)) == data


def test_put_file_download_and_delete(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"0123456789" * 1000)
    stored = storage.put_file("jobs/j1/artifacts/model.onnx", source)
    assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert source.exists()  # the source is left in place
    target = tmp_path / "copy.onnx"
    storage.download("jobs/j1/artifacts/model.onnx", target)
    assert target.read_bytes() == source.read_bytes()
    storage.delete("jobs/j1/artifacts/model.onnx")
    storage.delete("jobs/j1/artifacts/model.onnx")  # already gone: no error
    assert not storage.exists("jobs/j1/artifacts/model.onnx")
    with pytest.raises(StorageError, match=r"model\.onnx"):
        list(storage.iter_bytes("jobs/j1/artifacts/model.onnx"))


def test_failed_write_leaves_nothing(storage: Storage, tmp_path: Path) -> None:
    storage.write("k/obj", [b"old version"])

    def broken() -> Iterator[bytes]:
        yield b"x" * 1000
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        storage.write("k/obj", broken())
    assert b"".join(storage.iter_bytes("k/obj")) == b"old version"  # old object intact
    with pytest.raises(RuntimeError):
        storage.write("k/new", broken())
    assert not storage.exists("k/new")
    if isinstance(storage, LocalStorage):
        assert list(storage.tmp.iterdir()) == []


def test_overwrite_is_atomic_replacement(storage: Storage) -> None:
    storage.write("jobs/j/artifacts/a", [b"first attempt, partial"])
    stored = storage.write("jobs/j/artifacts/a", [b"second"])
    assert b"".join(storage.iter_bytes("jobs/j/artifacts/a")) == b"second"
    assert stored.size_bytes == 6


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a/../../b", "", "a\\b"])
def test_keys_that_escape_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="relative storage key"):
        storage.write(key, [b"x"])


def test_healthcheck(storage: Storage) -> None:
    storage.healthcheck()


def test_s3_healthcheck_fails_when_unreachable() -> None:
    s3 = S3Storage(bucket="nowhere", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageError, match="nowhere"):
        s3.healthcheck()


def test_local_healthcheck_fails_when_it_cannot_write(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    (store.root / ".health").write_bytes(b"")  # a file where the probe's folder must go
    with pytest.raises(StorageError, match="not writable"):
        store.healthcheck()


def test_adopt_consumes_a_hashed_file(storage: Storage, tmp_path: Path) -> None:
    spool = tmp_path / "spool.onnx"
    spool.write_bytes(b"abc" * 1000)
    sha = hashlib.sha256(spool.read_bytes()).hexdigest()
    stored = storage.adopt("blobs/x.onnx", spool, sha256=sha)
    assert (stored.sha256, stored.size_bytes) == (sha, 3000)
    assert not spool.exists()
    assert b"".join(storage.iter_bytes("blobs/x.onnx")) == b"abc" * 1000


def test_local_download_links_the_object_if_asked_and_copies_across_file_systems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "store")
    storage.write("models/m1", [b"weights" * 1000])
    target = tmp_path / "job" / "model.onnx"
    target.parent.mkdir()
    (target.parent / "model.onnx.part").write_bytes(b"left by a worker that died")
    storage.download("models/m1", target, link=True)
    assert target.read_bytes() == b"weights" * 1000
    assert target.stat().st_ino == storage.path("models/m1").stat().st_ino  # nothing copied
    plain = tmp_path / "job" / "plain.onnx"
    storage.download("models/m1", plain)  # a copy unless a link is asked for
    assert plain.stat().st_ino != storage.path("models/m1").stat().st_ino
    storage.write("models/m1", [b"replaced"])  # replaced whole: the link keeps its bytes
    assert target.read_bytes() == b"weights" * 1000

    def no_links(*args: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    copied = tmp_path / "job" / "copy.onnx"
    storage.download("models/m1", copied, link=True)
    assert copied.read_bytes() == b"replaced"
    assert copied.stat().st_ino != storage.path("models/m1").stat().st_ino


def test_local_put_file_links_the_file_and_copies_across_file_systems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "store")
    source = tmp_path / "job" / "model.qpack"
    source.parent.mkdir()
    source.write_bytes(b"package" * 5000)
    stored = storage.put_file("jobs/j1/artifacts/model.qpack", source)
    assert stored.sha256 == hashlib.sha256(b"package" * 5000).hexdigest()
    assert stored.size_bytes == 35000 and source.exists()
    assert source.stat().st_ino == storage.path(stored.key).stat().st_ino  # nothing copied
    assert not list(storage.tmp.iterdir())  # no temporary name left behind

    def no_links(*args: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    again = storage.put_file("jobs/j2/artifacts/model.qpack", source)
    assert again.sha256 == stored.sha256
    assert source.stat().st_ino != storage.path(again.key).stat().st_ino
    assert storage.path(again.key).read_bytes() == b"package" * 5000
