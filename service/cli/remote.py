"""The CLI's commands that talk to a running service: submit, status, fetch, batch."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from service.cli.client import ApiError, Client, load_spec
from service.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    ProgressBar,
    error,
    output_folder,
    print_json,
)
from service.settings import get_settings


def make_client(args: argparse.Namespace) -> Client:
    settings = get_settings()
    url = args.url or os.environ.get("QUANTSERVE_URL") or f"http://{settings.host}:{settings.port}"
    return Client(url, api_key=args.api_key or os.environ.get("QUANTSERVE_API_KEY"))


class _Uploads:
    """Uploads of one CLI run, so a file named on several batch lines is sent once."""

    def __init__(self, client: Client, *, presigned: bool = False) -> None:
        self.client = client
        self.presigned = presigned  # files go straight to the service's S3 store
        self.ids: dict[tuple[str, Path], str] = {}

    def resolve(self, what: str, ref: str) -> str:
        """The id for ``ref``: an existing file is uploaded; a path that is not a file (a
        folder, or a name with a folder or a suffix, which the service's ids never have) is a
        ``ValueError`` naming it; anything else is an id."""
        path = Path(ref)
        if not path.is_file():
            if path.exists():
                raise ValueError(f"{what} {ref}: a folder, not a file")
            if path.suffix or len(path.parts) > 1:
                raise ValueError(f"{what} {ref}: no such file")
            return ref
        key = (what, path.resolve())
        if key not in self.ids:
            c = self.client
            if what == "model":
                upload = c.upload_model_presigned if self.presigned else c.upload_model
            else:
                upload = c.upload_dataset_presigned if self.presigned else c.upload_dataset
            self.ids[key] = str(upload(path)["id"])
        return self.ids[key]


def _submit_one(uploads: _Uploads, entry: dict[str, Any]) -> dict[str, Any]:
    model = entry.get("model") or entry.get("model_id")
    if not isinstance(model, str):
        raise ValueError("each job needs 'model' (a file or a model id)")
    dataset = entry.get("dataset") or entry.get("dataset_id")
    spec = entry.get("spec", {})
    if not isinstance(spec, dict):
        raise ValueError(f"'spec' must be a JSON object, got {type(spec).__name__}")
    return uploads.client.submit(
        model_id=uploads.resolve("model", model),
        dataset_id=uploads.resolve("dataset", dataset) if isinstance(dataset, str) else None,
        spec=spec,
        kind=entry.get("kind"),
        idempotency_key=entry.get("idempotency_key"),
        name=entry.get("name"),
        labels=entry.get("labels"),
        callback_url=entry.get("callback_url"),
    )


def _wait(client: Client, job_id: str, *, quiet: bool) -> dict[str, Any]:
    bar = ProgressBar(sys.stderr, enabled=not quiet)
    try:
        return client.wait(
            job_id,
            on_update=lambda job: bar.update(
                float(job.get("progress") or 0.0), job.get("stage") or job["status"]
            ),
        )
    finally:
        bar.close()


def _labels(pairs: list[str]) -> dict[str, str]:
    """``--label key=value`` options as the job's labels."""
    labels = {}
    for pair in pairs:
        key, has_value, value = pair.partition("=")
        if not key or not has_value:
            raise ValueError(f"--label {pair!r} must be key=value")
        labels[key] = value
    return labels


def cmd_submit(args: argparse.Namespace) -> int:
    entry = {
        "model": args.model,
        "dataset": args.dataset,
        "spec": load_spec(args.spec),
        "kind": args.kind,
        "idempotency_key": args.idempotency_key,
        "name": args.name,
        "labels": _labels(args.label or []),
        "callback_url": args.callback_url,
    }
    with make_client(args) as client:
        job = _submit_one(_Uploads(client, presigned=args.presigned), entry)
        if args.wait:
            job = _wait(client, job["id"], quiet=args.quiet)
        print_json(job)
    if args.wait and job["status"] != "succeeded":
        failure = job.get("error") or {}
        error(f"job {job['id']} {job['status']}: {failure.get('code')}: {failure.get('message')}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        print_json(client.job(args.job))
    return EXIT_OK


def cmd_fetch(args: argparse.Namespace) -> int:
    out_dir = output_folder(args.out or args.job)
    with make_client(args) as client:
        for artifact in client.artifacts(args.job):
            fetched = client.download(args.job, artifact, out_dir, presigned=args.presigned)
            print_json(
                {
                    "name": fetched.name,
                    "path": str(fetched.path),
                    "size_bytes": fetched.size_bytes,
                    "sha256": fetched.sha256,
                }
            )
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    failures = 0
    submitted: list[tuple[int, str]] = []
    with make_client(args) as client, open(args.file, encoding="utf-8") as lines:
        uploads = _Uploads(client, presigned=args.presigned)
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            result: dict[str, Any] = {"line": number}
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("each line must be a JSON object")
                job = _submit_one(uploads, entry)
                result.update(ok=True, job_id=job["id"], status=job["status"])
                submitted.append((number, job["id"]))
            except ApiError as exc:
                result.update(ok=False, error=exc.to_dict())
            except (ValueError, OSError) as exc:
                result.update(
                    ok=False, error={"status": 0, "code": "invalid_line", "message": str(exc)}
                )
            failures += not result["ok"]
            print_json(result)
        if args.wait:
            for number, job_id in submitted:
                job = client.wait(job_id)
                ok = job["status"] == "succeeded"
                failures += not ok
                print_json(
                    {
                        "line": number,
                        "ok": ok,
                        "job_id": job_id,
                        "status": job["status"],
                        "error": job.get("error"),
                    }
                )
    return EXIT_FAILED if failures else EXIT_OK
