"""Where uploads and artifacts live: a local folder (embedded) or an S3-compatible bucket.

Both implement ``Storage``. Writes take an iterable of byte chunks, hash them with sha256 on
the way and are atomic: a reader sees the whole object or none of it (a temp file renamed
into place; an S3 PUT or multipart upload that only appears when complete). Nothing is held
whole in memory: chunks are written as they come and reads are streamed in chunks.

Keys are ``/``-separated relative paths (``blobs/<sha256>.onnx``,
``jobs/<id>/artifacts/model.onnx``); a key that would escape the root is refused.

A local write that runs out of space (``ENOSPC``, ``EDQUOT``) raises ``StorageFullError``
(the API's 507 ``storage_full``) and is remembered until a write succeeds again:
``storage_full()`` says why, for readiness probes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from service.settings import Settings

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True)
class StoredObject:
    key: str
    size_bytes: int
    sha256: str


class StorageError(Exception):
    """Storage refused or failed an operation (missing key, unreachable endpoint)."""


class StorageFullError(StorageError):
    """No space left where a file was being written (the storage or the upload spool)."""


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_full_lock = threading.Lock()
_full: dict[str, object] = {}


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` is the operating system saying the disk (or a quota) is full."""
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


def note_full(where: str, exc: BaseException) -> StorageFullError:
    """Remember that a write to ``where`` found no space; the error to raise."""
    reason = f"no space left to write {where}: {exc}"
    with _full_lock:
        _full.update(reason=reason, at=time.time())
    return StorageFullError(reason)


def note_written() -> None:
    """A write succeeded: the storage is no longer full."""
    if _full:
        with _full_lock:
            _full.clear()


def storage_full() -> str | None:
    """Why the last local write failed for lack of space (and when, as a Unix time), while
    no write has succeeded since; None otherwise. Readiness probes report it."""
    with _full_lock:
        if not _full:
            return None
        return f"{_full['reason']} (at {_full['at']:.0f})"


@contextlib.contextmanager
def writing(where: str) -> Iterator[None]:
    """Turn a full disk met inside the block into ``StorageFullError`` (and remember it)."""
    try:
        yield
    except OSError as exc:
        if is_no_space(exc):
            raise note_full(where, exc) from exc
        raise
    note_written()


def check_key(key: str) -> str:
    """Return ``key`` if it is a plain relative path; raise ``ValueError`` otherwise."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\\" in key:
        raise ValueError(f"{key=} is not a relative storage key")
    return key


def file_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            yield chunk


class Storage(Protocol):
    def write(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        """Store the bytes of ``chunks`` under ``key`` atomically; return size and sha256."""
        ...

    def put_file(self, key: str, path: Path) -> StoredObject:
        """Store a local file under ``key`` atomically (the file is left in place)."""
        ...

    def adopt(self, key: str, path: Path, *, sha256: str) -> StoredObject:
        """Store a local file already hashed (an upload's spool file), consuming it.

        The caller vouches for ``sha256``; a local storage on the same file system moves the
        file into place instead of copying it.
        """
        ...

    def iter_bytes(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The object's bytes in chunks; ``StorageError`` if it does not exist."""
        ...

    def download(self, key: str, path: Path, *, link: bool = False) -> None:
        """Copy the object into a local file (written atomically). ``link``: a hard link to a
        local object may stand in for the copy (for a file that is only read, by readers that
        accept links: onnx refuses hard-linked external data)."""
        ...

    def iter_range(self, key: str, start: int, length: int,
                   chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """``length`` bytes of the object from offset ``start`` (a Range request's part)."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""
        ...

    def healthcheck(self) -> None:
        """Raise ``StorageError`` if the storage cannot be written and read now."""
        ...


def _file_range(path: Path, start: int, length: int, chunk_bytes: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        while length > 0 and (chunk := f.read(min(chunk_bytes, length))):
            length -= len(chunk)
            yield chunk


def _linked(source: Path, link: Path) -> bool:
    """Hard-link ``source`` at ``link``; False where the file system cannot (another file
    system, or one without hard links)."""
    try:
        os.link(source, link)
    except OSError:
        return False
    return True


class LocalStorage:
    """A folder; temp files live in ``<root>/.tmp`` so renames stay on one file system."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _atomic(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with writing(f"{key!r} in local storage"):
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="w-")
            try:
                with os.fdopen(fd, "wb") as f:
                    for chunk in chunks:
                        digest.update(chunk)
                        size += len(chunk)
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp_name, target)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        return StoredObject(key=key, size_bytes=size, sha256=digest.hexdigest())

    def write(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        return self._atomic(key, chunks)

    def put_file(self, key: str, path: Path) -> StoredObject:
        """A hard link to ``path`` where it is on the storage's file system (no bytes copied:
        the file is left in place, and a job's artifacts are not written again once stored);
        a copy otherwise. Either way the object's bytes are on disk before it appears."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp / f"l-{secrets.token_hex(8)}"
        if not _linked(path, tmp):
            return self._atomic(key, file_chunks(path))
        try:
            with writing(f"{key!r} in local storage"), open(tmp, "rb") as f:
                digest = hashlib.file_digest(f, "sha256")
                os.fsync(f.fileno())
                size = os.fstat(f.fileno()).st_size
                os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredObject(key=key, size_bytes=size, sha256=digest.hexdigest())

    def adopt(self, key: str, path: Path, *, sha256: str) -> StoredObject:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        size = path.stat().st_size
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        try:
            os.replace(path, target)
        except OSError:  # another file system: copy (atomically) instead
            stored = self.put_file(key, path)
            path.unlink(missing_ok=True)
            return stored
        return StoredObject(key=key, size_bytes=size, sha256=sha256)

    def iter_bytes(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        path = self.path(key)
        if not path.is_file():
            raise StorageError(f"no object {key!r} in local storage")
        return file_chunks(path, chunk_bytes)

    def iter_range(self, key: str, start: int, length: int,
                   chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        path = self.path(key)
        if not path.is_file():
            raise StorageError(f"no object {key!r} in local storage")
        return _file_range(path, start, length, chunk_bytes)

    def download(self, key: str, path: Path, *, link: bool = False) -> None:
        """With ``link``, a hard link to the object where ``path`` is on the same file system
        (no bytes copied: objects are only ever replaced whole, never written in place); a
        copy otherwise."""
        source = self.path(key)
        if not source.is_file():
            raise StorageError(f"no object {key!r} in local storage")
        tmp = path.with_name(path.name + ".part")
        tmp.unlink(missing_ok=True)  # left by an attempt that died
        with writing(str(path)):
            if not (link and _linked(source, tmp)):
                shutil.copyfile(source, tmp)
            os.replace(tmp, path)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def healthcheck(self) -> None:
        try:
            probe = self._atomic(".health/probe", [b"ok"])
            if self.path(probe.key).read_bytes() != b"ok":
                raise StorageError(f"local storage at {self.root} read back other bytes")
        except OSError as exc:
            raise StorageError(f"local storage at {self.root} is not writable: {exc}") from exc


class _HashingReader:
    """A file-like reader over chunks that hashes what boto3 reads from it."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if n < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        self.digest.update(out)
        self.size += len(out)
        return out


class S3Storage:
    """An S3-compatible bucket (AWS, MinIO, moto); credentials come from the AWS env vars.

    Writes go through boto3's managed upload: one PUT for small objects, a multipart upload
    (8 MiB parts, completed only at the end) for large ones, so the object appears whole or
    not at all.
    """

    def __init__(
        self, *, bucket: str, endpoint_url: str | None = None, region: str = "us-east-1",
        client: Any = None, timeout_s: float = 5.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                # A frozen endpoint costs at most two requests of timeout_s each.
                connect_timeout=timeout_s, read_timeout=timeout_s,
                retries={"total_max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (embedded MinIO / moto set-ups)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def write(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        reader = _HashingReader(chunks)
        try:
            self.client.upload_fileobj(reader, self.bucket, check_key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot write {key!r} to bucket {self.bucket!r}: {exc}") from exc
        return StoredObject(key=key, size_bytes=reader.size, sha256=reader.digest.hexdigest())

    def put_file(self, key: str, path: Path) -> StoredObject:
        return self.write(key, file_chunks(path))

    def adopt(self, key: str, path: Path, *, sha256: str) -> StoredObject:
        stored = self.put_file(key, path)
        path.unlink(missing_ok=True)
        return stored

    def iter_bytes(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"no object {key!r} in bucket {self.bucket!r}: {exc}") from exc
        return iter(body.iter_chunks(chunk_bytes))

    def iter_range(self, key: str, start: int, length: int,
                   chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        if length <= 0:
            return iter(())
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=check_key(key),
                                          Range=f"bytes={start}-{start + length - 1}")["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"no object {key!r} in bucket {self.bucket!r}: {exc}") from exc
        return iter(body.iter_chunks(chunk_bytes))

    def download(self, key: str, path: Path, *, link: bool = False) -> None:
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "wb") as f:
            for chunk in self.iter_bytes(key):
                f.write(chunk)
        os.replace(tmp, path)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise StorageError(f"cannot look up {key!r} in {self.bucket!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot look up {key!r} in {self.bucket!r}: {exc}") from exc
        return True

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=check_key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot delete {key!r} from {self.bucket!r}: {exc}") from exc

    def healthcheck(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # botocore raises many unrelated classes for "down"
            raise StorageError(f"S3 bucket {self.bucket!r} is not reachable: {exc}") from exc


@contextlib.contextmanager
def local_file(storage: Storage, key: str, spool_dir: Path) -> Iterator[Path]:
    """A local path holding the object ``key`` while the block runs: the file itself in a
    local storage (read it, do not change it), else a copy downloaded into ``spool_dir`` and
    removed afterwards. The path keeps the key's suffix."""
    if isinstance(storage, LocalStorage):
        path = storage.path(key)
        if not path.is_file():
            raise StorageError(f"no object {key!r} in local storage")
        yield path
        return
    spool_dir.mkdir(parents=True, exist_ok=True)
    with writing(f"a copy of {key!r}"):
        folder = Path(tempfile.mkdtemp(dir=spool_dir, prefix="copy-"))
    try:
        path = folder / f"object{PurePosixPath(key).suffix}"
        with writing(f"a copy of {key!r}"):
            storage.download(key, path)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def make_storage(settings: Settings) -> Storage:
    """The storage that ``settings.storage`` names."""
    if settings.storage == "s3":
        return S3Storage(bucket=settings.s3_bucket, endpoint_url=settings.s3_endpoint_url,
                         region=settings.s3_region, timeout_s=settings.storage_timeout_s)
    return LocalStorage(settings.storage_path)
