"""Reading multipart uploads as a stream: each file goes to a spool file while it is hashed.

The request body is read chunk by chunk (``request.stream()``) through python-multipart's
push parser; file parts are written to a spool file in ``spool_dir`` as they arrive and
hashed on the way, so an upload of any size costs one chunk of memory. The size limit is
checked twice: on ``Content-Length`` before anything is read, and on the bytes counted
while streaming (a lying or absent ``Content-Length`` still gets 413). A file name with a NUL
character is refused (400) before its bytes are read; a spool disk with no space left is 507
``storage_full`` (``service.store.storage.writing``).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from service.store.storage import writing

MAX_TEXT_FIELD_BYTES = 1 << 20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
FileCheck = Callable[[str, str], None]  # (field, file name) -> None, or raise
# Multipart framing (boundaries, part headers, text fields) on top of the files themselves.
FRAMING_ALLOWANCE = MAX_TEXT_FIELD_BYTES + (64 << 10)


@dataclass(frozen=True, kw_only=True)
class SpooledFile:
    field: str
    filename: str
    suffix: str  # lower-case, with the dot
    path: Path
    size_bytes: int
    sha256: str


@dataclass(kw_only=True)
class MultipartForm:
    files: dict[str, SpooledFile] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    def cleanup(self) -> None:
        for spooled in self.files.values():
            remove_spool(spooled.path)


def remove_spool(path: Path) -> None:
    """Remove a spool file and its folder."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def sweep_stale_spools(spool_dir: Path, *, older_than_s: float = 86400.0) -> int:
    """Remove spool folders left by a process that died mid-upload; returns how many.

    Only folders untouched for ``older_than_s`` go: another API process on this machine may
    be streaming into a recent one.
    """
    if not spool_dir.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for folder in spool_dir.glob("upload-*"):
        with contextlib.suppress(OSError):
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder)
                removed += 1
    return removed


def spool_path(spool_dir: Path, filename: str) -> Path:
    """A new spool file for an upload named ``filename``, in a folder of its own.

    The file keeps the caller's file name (its suffix lower-cased), so that the core's
    messages about it name the file the caller sent.
    """
    safe = _SAFE_NAME.sub("_", filename)[-150:].lstrip(".") or "upload"
    with writing("the upload spool"):
        folder = Path(tempfile.mkdtemp(dir=spool_dir, prefix="upload-"))
    return folder / (Path(safe).stem + Path(filename).suffix.lower())


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_content_length(request: Request, max_bytes: int) -> None:
    raw = request.headers.get("content-length")
    if raw is None:
        return
    try:
        length = int(raw)
    except ValueError:
        raise BadRequestError(f"Content-Length={raw!r} is not a number") from None
    if length > max_bytes + FRAMING_ALLOWANCE:
        raise PayloadTooLargeError(
            f"the upload is {length} bytes; the limit is {max_bytes} bytes",
            details={"limit_bytes": max_bytes},
        )


class _Collector:
    """python-multipart callbacks that route each part to a spool file or a text field."""

    def __init__(self, form: MultipartForm, *, spool_dir: Path, max_bytes: int,
                 file_fields: frozenset[str], text_fields: frozenset[str],
                 check_file: FileCheck | None) -> None:
        self.form = form
        self.check_file = check_file
        self.spool_dir = spool_dir
        self.max_bytes = max_bytes
        self.file_fields = file_fields
        self.text_fields = text_fields
        self.file_bytes = 0
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._filename: str | None = None
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._digest: Any = None
        self._size = 0
        self._text = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._name, self._filename, self._file, self._path = "", None, None, None
        self._size = 0
        self._text = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            if self._name not in self.text_fields:
                raise UnprocessableError(self._unexpected(self._name))
            return
        if self._name not in self.file_fields:
            raise UnprocessableError(self._unexpected(self._name))
        if self._name in self.form.files:
            raise UnprocessableError(f"file field {self._name!r} was sent twice")
        if b"\x00" in filename:
            raise BadRequestError(f"the file name of field {self._name!r} holds a NUL "
                                  "character")
        self._filename = Path(filename.decode("utf-8", "replace").replace("\\", "/")).name
        if self.check_file is not None:  # refuse a wrong format before reading the file
            self.check_file(self._name, self._filename)
        self._path = spool_path(self.spool_dir, self._filename)
        with writing("the upload spool"):
            self._file = open(self._path, "wb")  # noqa: SIM115 - closed in on_part_end / abort
        self._digest = hashlib.sha256()

    def _unexpected(self, name: str) -> str:
        expected = sorted(self.file_fields | self.text_fields)
        return f"unexpected multipart field {name!r}; expected: {', '.join(expected)}"

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is None:
            self._text += chunk
            if len(self._text) > MAX_TEXT_FIELD_BYTES:
                raise PayloadTooLargeError(
                    f"form field {self._name!r} is over {MAX_TEXT_FIELD_BYTES} bytes"
                )
            return
        self.file_bytes += len(chunk)
        if self.file_bytes > self.max_bytes:
            raise PayloadTooLargeError(
                f"the upload is over the limit of {self.max_bytes} bytes",
                details={"limit_bytes": self.max_bytes},
            )
        self._digest.update(chunk)
        self._size += len(chunk)
        with writing("the upload spool"):
            self._file.write(chunk)

    def on_part_end(self) -> None:
        if self._file is None:
            try:
                self.form.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequestError(f"form field {self._name!r} is not UTF-8 text") from None
            return
        assert self._path is not None and self._filename is not None  # set together above
        file, self._file = self._file, None
        try:
            with writing("the upload spool"):
                file.close()  # flushes the last buffered bytes
        except BaseException:
            remove_spool(self._path)
            raise
        self.form.files[self._name] = SpooledFile(
            field=self._name, filename=self._filename, suffix=self._path.suffix,
            path=self._path, size_bytes=self._size, sha256=self._digest.hexdigest(),
        )

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            if self._path is not None:
                remove_spool(self._path)


async def read_multipart(
    request: Request,
    *,
    spool_dir: Path,
    max_bytes: int,
    file_fields: frozenset[str],
    text_fields: frozenset[str] = frozenset(),
    check_file: FileCheck | None = None,
) -> MultipartForm:
    """Stream a ``multipart/form-data`` body into spool files and text fields.

    Raises 415 for another content type, 413 past ``max_bytes`` of file data, 400 for a
    malformed body and 422 for a field that is not expected. On error nothing is left in
    ``spool_dir``; on success the caller owns the files (``MultipartForm.cleanup``).
    ``check_file(field, filename)`` runs when a file part starts, before its bytes are read.
    """
    if content_type(request) != "multipart/form-data":
        raise UnsupportedMediaTypeError(
            f"Content-Type {content_type(request) or 'none'!r} is not accepted here; "
            "send multipart/form-data"
        )
    check_content_length(request, max_bytes)
    _, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequestError("multipart/form-data without a boundary parameter")
    spool_dir.mkdir(parents=True, exist_ok=True)
    form = MultipartForm()
    collector = _Collector(form, spool_dir=spool_dir, max_bytes=max_bytes,
                           file_fields=file_fields, text_fields=text_fields,
                           check_file=check_file)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        collector.abort()
        form.cleanup()
        raise BadRequestError(f"malformed multipart body: {exc}") from None
    except BaseException:
        collector.abort()
        form.cleanup()
        raise
    if collector._file is not None:  # the body ended inside a part
        collector.abort()
        form.cleanup()
        raise BadRequestError("malformed multipart body: it ends inside a part")
    return form


@contextlib.asynccontextmanager
async def single_upload(
    request: Request, *, spool_dir: Path, max_bytes: int, check: Callable[[str], object],
    what: str,
) -> AsyncIterator[SpooledFile]:
    """The spooled multipart field ``file`` of a one-file upload, removed on exit.

    ``check(filename)`` refuses a file by its name before its bytes are read; a body without
    the field is a 422 naming ``what`` it should have carried.
    """
    def check_file(_field: str, filename: str) -> None:
        check(filename)

    form = await read_multipart(request, spool_dir=spool_dir, max_bytes=max_bytes,
                                file_fields=frozenset({"file"}), check_file=check_file)
    try:
        upload = form.files.get("file")
        if upload is None:
            raise UnprocessableError(f"multipart field 'file' is required ({what})")
        yield upload
    finally:
        form.cleanup()
