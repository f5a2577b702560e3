"""Conversions from the store's records to public schemas, and the OpenAPI pieces shared by
routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.api.schemas import (
    DatasetPublic,
    ErrorResponse,
    JobError,
    JobPublic,
    ModelPublic,
    TensorPublic,
)
from service.store.records import DatasetRecord, JobRecord, ModelRecord


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error answers, all of them ``ErrorResponse``.

    503 is on every route: any of them needs the database, and most need storage.
    """
    return {status: {"model": ErrorResponse} for status in sorted({*statuses, 503})}


def upload_body(description: str) -> dict[str, Any]:
    """The OpenAPI request body of a one-file upload (multipart field ``file``)."""
    file = {"type": "string", "format": "binary", "description": description}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"],
                               "properties": {"file": file}}
                }
            },
        }
    }


def add_component_schemas(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Put ``models`` (and the models they use) among the OpenAPI document's schemas.

    Routes that read their body themselves (JSON or multipart on one path) describe it with
    ``openapi_extra`` refs, which FastAPI does not follow; without this they would dangle.
    Schemas FastAPI already generated are kept as they are.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        _, defs = models_json_schema([(m, "validation") for m in models],
                                     ref_template="#/components/schemas/{model}")
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in defs.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def job_public(job: JobRecord) -> JobPublic:
    error = None
    if job.error_code is not None:
        error = JobError(code=job.error_code, message=job.error_message or "")
    return JobPublic(
        id=job.id, kind=job.kind, status=job.status, stage=job.stage,  # type: ignore[arg-type]
        progress=job.progress, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, model_id=job.model_id, dataset_id=job.dataset_id,
        spec=job.spec, error=error, summary=job.summary, name=job.name,
        labels=job.labels or {}, callback_url=job.callback_url,
    )


def model_public(model: ModelRecord) -> ModelPublic:
    return ModelPublic(
        id=model.id, sha256=model.sha256, size_bytes=model.size_bytes,
        format=model.format,  # type: ignore[arg-type]
        n_tensors=model.n_tensors, n_params=model.n_params,
        tensors=[TensorPublic(**t) for t in model.tensors], created_at=model.created_at,
    )


def dataset_public(dataset: DatasetRecord) -> DatasetPublic:
    return DatasetPublic(
        id=dataset.id, sha256=dataset.sha256, size_bytes=dataset.size_bytes,
        arrays=dataset.arrays, created_at=dataset.created_at,
    )
