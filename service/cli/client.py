"""A small HTTP client of the service's API (``/v1``), used by the ``quantserve`` CLI.

Uploads stream from the file (httpx reads a file object in chunks); downloads stream to a
temporary file beside the target while their sha256 is computed, and are renamed into place
only when the hash matches the one the service recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.cli.errors import ApiError
from service.cli.events import sse_events
from service.cli.specs import load_spec

__all__ = ["ApiError", "Client", "FetchedArtifact", "load_spec"]

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_TIMEOUT_S = 60.0
# The event stream sends a comment every 15 s while nothing changes.
EVENTS_READ_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class FetchedArtifact:
    name: str
    path: Path
    size_bytes: int
    sha256: str


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:500] or response.reason_phrase
    raise ApiError(response.status_code, code, message)


class Client:
    """Calls of the API; every method raises ``ApiError`` on an error answer."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"{self.http.base_url}: {exc}") from exc
        _raise_for(response)
        return response

    def _upload(self, path: str, file: Path) -> dict[str, Any]:
        with open(file, "rb") as f:
            files = {"file": (file.name, f, "application/octet-stream")}
            return dict(self._request("POST", path, files=files).json())

    def upload_model(self, file: Path) -> dict[str, Any]:
        return self._upload("/v1/models", file)

    def upload_model_presigned(self, file: Path) -> dict[str, Any]:
        return self._upload_presigned("/v1/models/uploads", file)

    def upload_dataset_presigned(self, file: Path) -> dict[str, Any]:
        return self._upload_presigned("/v1/datasets/uploads", file)

    def _upload_presigned(self, uploads: str, file: Path) -> dict[str, Any]:
        """Upload a file straight to the service's S3 store: announce its size and sha256 at
        ``uploads``, PUT it to the presigned URL, then complete the upload (docs/api.md)."""
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        body = {"filename": file.name, "size_bytes": file.stat().st_size,
                "sha256": digest.hexdigest()}
        upload = self._request("POST", uploads, json=body).json()
        try:
            with open(file, "rb") as f:  # not self.http: the API key is not the store's
                put = httpx.put(upload["url"], content=f, headers=upload["headers"],
                                timeout=self.http.timeout)
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"the upload URL: {exc}") from exc
        if not put.is_success:
            raise ApiError(put.status_code, "upload_refused",
                           f"the store refused the file: {put.text[:500]}")
        return dict(self._request("POST", f"{uploads}/{upload['id']}/complete").json())

    def upload_dataset(self, file: Path) -> dict[str, Any]:
        return self._upload("/v1/datasets", file)

    def submit(
        self,
        *,
        model_id: str,
        spec: dict[str, Any],
        dataset_id: str | None = None,
        kind: str | None = None,
        idempotency_key: str | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        callback_url: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model_id": model_id, "spec": spec}
        if dataset_id is not None:
            body["dataset_id"] = dataset_id
        if kind is not None:
            body["kind"] = kind
        extras = {"name": name, "labels": labels or None, "callback_url": callback_url}
        body.update({k: v for k, v in extras.items() if v is not None})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._request("POST", "/v1/jobs", json=body, headers=headers).json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/jobs/{job_id}").json())

    def report(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/jobs/{job_id}/report").json())

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/v1/jobs/{job_id}/artifacts").json())

    def wait(
        self,
        job_id: str,
        *,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.2,
        timeout_s: float | None = None,
        events: bool = True,
    ) -> dict[str, Any]:
        """Follow the job until it is final; ``on_update`` sees every state.

        The job's event stream (``GET /v1/jobs/{id}/events``) is followed first; when it
        cannot be had (an older service, a proxy that buffers) or ends early, the job is
        polled every ``poll_s`` instead.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if events:
            job = self._follow_events(job_id, on_update, deadline, timeout_s)
            if job is not None:
                return job
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] in FINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(
                    0, "wait_timeout", f"job {job_id} still {job['status']} after {timeout_s:g} s"
                )
            time.sleep(poll_s)

    def _follow_events(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None,
        deadline: float | None,
        timeout_s: float | None,
    ) -> dict[str, Any] | None:
        """The final job as the event stream tells it; ``None`` if the stream could not be
        followed to the end (the caller polls)."""
        timeout = httpx.Timeout(self.http.timeout.connect, read=EVENTS_READ_TIMEOUT_S)
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout,
                                  headers={"Accept": "text/event-stream"}) as response:
                media = response.headers.get("content-type", "")
                if response.status_code != 200 or not media.startswith("text/event-stream"):
                    return None
                for event, data in sse_events(response.iter_lines()):
                    if event != "job":
                        continue
                    job = dict(json.loads(data))
                    if on_update is not None:
                        on_update(job)
                    if job.get("status") in FINAL_STATUSES:
                        return job
                    if deadline is not None and time.monotonic() > deadline:
                        raise ApiError(0, "wait_timeout", f"job {job_id} still {job['status']} "
                                       f"after {timeout_s:g} s")
        except (httpx.TransportError, ValueError):
            return None
        return None

    def download(
        self, job_id: str, artifact: dict[str, Any], out_dir: Path, *, presigned: bool = False
    ) -> FetchedArtifact:
        """Stream one artifact into ``out_dir``, checking its sha256 before it appears;
        ``presigned``: from the S3 store, by the URL the API signs (no API key sent there)."""
        name = Path(str(artifact["name"])).name  # never a path out of out_dir
        target = out_dir / name
        partial = out_dir / f".{name}.part"
        digest = hashlib.sha256()
        size = 0
        path = f"/v1/jobs/{job_id}/artifacts/{name}"
        try:
            if presigned:
                link = self._request("GET", f"{path}/url").json()
                source = httpx.stream("GET", str(link["url"]), timeout=self.http.timeout)
            else:
                source = self.http.stream("GET", path)
            with source as response:
                if not response.is_success:
                    response.read()
                    _raise_for(response)
                with open(partial, "wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
                        f.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            where = "the store" if presigned else self.http.base_url
            raise ApiError(0, "unreachable", f"{where}: {exc}") from exc
        sha256 = digest.hexdigest()
        if sha256 != artifact["sha256"]:
            partial.unlink(missing_ok=True)
            raise ApiError(
                0,
                "checksum_mismatch",
                f"{name}: sha256 {sha256} differs from the recorded {artifact['sha256']}",
            )
        os.replace(partial, target)
        return FetchedArtifact(name=name, path=target, size_bytes=size, sha256=sha256)
