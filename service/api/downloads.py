"""Answers that stream a job's stored file: artifacts (with ``ETag``, ``If-None-Match``,
``HEAD`` and single ``Range`` requests) and the report page shown inline.

Range: ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` are answered 206 with ``Content-Range``;
a range starting past the end is 416 ``range_not_satisfiable`` with ``Content-Range:
bytes */size``; several ranges, or a header that is not one of these forms, are ignored
(the whole file, 200), as RFC 9110 allows. ``If-Range`` with a stale ETag also gives the
whole file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fastapi import Response
from fastapi.responses import StreamingResponse

from service.errors import ServiceError
from service.settings import Settings
from service.store.records import ArtifactRecord
from service.store.storage import Storage

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiableError(ServiceError):
    status_code = 416
    code = "range_not_satisfiable"


def etag_matches(header: str | None, sha256: str) -> bool:
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/").strip('"') == sha256:
            return True
    return False


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, length)`` of a single satisfiable range, ``None`` for the whole file."""
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        if n == 0:
            raise _unsatisfiable(size)
        n = min(n, size)
        return (size - n, n)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return (start, end - start + 1)


def _unsatisfiable(size: int) -> RangeNotSatisfiableError:
    return RangeNotSatisfiableError(
        f"the range asked for is outside the file's {size} bytes",
        details={"size_bytes": size}, headers={"Content-Range": f"bytes */{size}"},
    )


def artifact_response(storage: Storage, artifact: ArtifactRecord, headers: Mapping[str, str],
                      *, head: bool = False) -> Response:
    """The download of ``artifact`` for a request with ``headers`` (GET, or HEAD)."""
    etag = f'"{artifact.sha256}"'
    if etag_matches(headers.get("if-none-match"), artifact.sha256):
        return Response(status_code=304, headers={"ETag": etag})
    out = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{artifact.name}"',
        "X-Content-Type-Options": "nosniff",
    }
    size = artifact.size_bytes
    if_range = headers.get("if-range")
    wanted = None
    if if_range is None or etag_matches(if_range, artifact.sha256):
        wanted = byte_range(headers.get("range"), size)
    if wanted is None:
        out["Content-Length"] = str(size)
        if head:
            return Response(status_code=200, headers=out, media_type=artifact.media_type)
        return StreamingResponse(storage.iter_bytes(artifact.storage_key),
                                 media_type=artifact.media_type, headers=out)
    start, length = wanted
    out["Content-Length"] = str(length)
    out["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    if head:
        return Response(status_code=206, headers=out, media_type=artifact.media_type)
    return StreamingResponse(storage.iter_range(artifact.storage_key, start, length),
                             status_code=206, media_type=artifact.media_type, headers=out)


def report_page_headers(settings: Settings, artifact: ArtifactRecord) -> dict[str, str]:
    """Headers of ``report.html`` shown inline: a policy that lets no script run, nothing
    load but inline styles and data: images, and only ``report_frame_ancestors`` frame it."""
    policy = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
              "base-uri 'none'; form-action 'none'; "
              f"frame-ancestors {settings.report_frame_ancestors}; sandbox")
    return {
        "Content-Security-Policy": policy,
        "Content-Disposition": 'inline; filename="report.html"',
        "Content-Length": str(artifact.size_bytes),
        "ETag": f'"{artifact.sha256}"',
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
