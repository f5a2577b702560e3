"""Storage keys of uploads and job artifacts, and storing a job's artifact files.

The worker calls ``store_artifacts`` with the files ``run_job`` wrote and hands the records to
``JobsRepo.succeed``. Keys are fixed per job and file name, so a job that is run again (after
its worker died) overwrites its partial artifacts instead of adding a second set.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from service.store.records import ArtifactRecord
from service.store.storage import Storage, check_key

MEDIA_TYPES = {
    ".onnx": "application/octet-stream",
    ".qpack": "application/octet-stream",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".npz": "application/octet-stream",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def blob_key(sha256: str, suffix: str) -> str:
    """Uploads are content addressed: one stored copy per distinct file."""
    return check_key(f"blobs/{sha256}{suffix}")


def external_key(model_key: str) -> str:
    """Where the external data file of the ONNX model stored at ``model_key`` is kept (the
    model names the file's location; the worker puts it there next to the model)."""
    return check_key(f"{model_key}.external")


def artifact_key(job_id: str, name: str) -> str:
    return check_key(f"jobs/{job_id}/artifacts/{name}")


def store_artifacts(
    storage: Storage, job_id: str, paths: Iterable[Path]
) -> tuple[ArtifactRecord, ...]:
    """Upload each file under ``jobs/<job_id>/artifacts/<file name>``, recording its sha256."""
    records = []
    for path in paths:
        stored = storage.put_file(artifact_key(job_id, path.name), path)
        records.append(
            ArtifactRecord(name=path.name, size_bytes=stored.size_bytes, sha256=stored.sha256,
                           media_type=media_type(path.name), storage_key=stored.key)
        )
    return tuple(records)
