"""What the repositories hand out: frozen snapshots of rows, never the rows themselves.

A record has the fields of its table's columns (the job's, a model's, a dataset's), so the API
and the worker read them like rows but cannot write through them or trigger a query; the
tables stay inside the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self

from sqlalchemy import RowMapping

from service.store.models import Base


class _Record:
    @classmethod
    def of(cls, row: Base | RowMapping | Mapping[str, Any]) -> Self:
        """The record of an ORM row or of a Core result mapping with the same columns."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        if isinstance(row, Mapping):
            return cls(**{name: row[name] for name in names})
        return cls(**{name: getattr(row, name) for name in names})


@dataclass(frozen=True, kw_only=True)
class JobRecord(_Record):
    """A job as stored (``jobs`` table); ``status`` is a ``JobStatus`` value."""

    id: str
    team_id: str
    kind: str
    status: str
    model_id: str
    dataset_id: str | None
    spec: dict[str, Any]
    idempotency_key: str | None
    task_id: str | None
    created_at: datetime
    stage: str | None = None
    progress: float = 0.0
    attempts: int = 0
    error_code: str | None = None
    error_message: str | None = None
    summary: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    duration_s: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    name: str | None = None
    labels: dict[str, str] | None = None
    callback_url: str | None = None
    heartbeat_at: datetime | None = None  # the running worker's last sign of life
    heartbeat_owner: str | None = None  # which process that is (service.liveness)


@dataclass(frozen=True, kw_only=True)
class ModelRecord(_Record):
    """An uploaded model (``models`` table); ``tensors`` as the API lists them."""

    id: str
    team_id: str
    sha256: str
    size_bytes: int
    format: str
    filename: str
    n_tensors: int
    n_params: int
    tensors: list[dict[str, Any]]
    storage_key: str
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class DatasetRecord(_Record):
    """An uploaded evaluation set (``datasets`` table): its arrays' names and shapes."""

    id: str
    team_id: str
    sha256: str
    size_bytes: int
    filename: str
    arrays: dict[str, list[int]]
    storage_key: str
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class ArtifactRecord(_Record):
    """One stored artifact of a job (see ``service.store.artifacts.store_artifacts``)."""

    name: str
    size_bytes: int
    sha256: str
    media_type: str
    storage_key: str


@dataclass(frozen=True, kw_only=True)
class PendingUploadRecord(_Record):
    """A presigned upload (``pending_uploads`` table) of a ``kind`` (``model`` or
    ``dataset``); ``model_id`` or ``dataset_id`` once it is completed."""

    id: str
    team_id: str
    filename: str
    size_bytes: int
    sha256: str
    storage_key: str
    created_at: datetime
    expires_at: datetime
    complete_by: datetime
    model_id: str | None
    refused: bool
    kind: str
    dataset_id: str | None

    @property
    def result_id(self) -> str | None:
        """The model or dataset the upload became (None until completed)."""
        return self.model_id if self.kind == "model" else self.dataset_id
