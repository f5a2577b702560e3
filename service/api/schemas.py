"""Request and response bodies (Pydantic), in families per resource.

Routes answer with these and never with database rows; field names are those of
``shared/API.md`` and must not change.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from quantcore import JobKind
from quantcore.explore import grid as sweep_spec
from quantcore.explore import search

StatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorInfo


class TensorPublic(BaseModel):
    name: str
    shape: list[int]
    dtype: str
    params: int


class ModelPublic(BaseModel):
    id: str
    sha256: str
    size_bytes: int
    format: Literal["onnx", "safetensors", "npz"]
    n_tensors: int
    n_params: int
    tensors: list[TensorPublic]
    created_at: datetime


class DatasetPublic(BaseModel):
    id: str
    sha256: str
    size_bytes: int
    arrays: dict[str, list[int]]
    created_at: datetime


def _doc_before(module: Any, stop: str) -> str:
    """A core module's docstring up to the paragraph starting with ``stop`` (all of it when
    there is none): the spec shapes are documented once, where they are parsed."""
    return inspect.cleandoc(module.__doc__ or "").split(f"\n\n{stop}")[0]


SPEC_DESCRIPTION = (
    "The job's spec; its shape depends on `kind`.\n\n"
    "**quantize**: a quantize spec (fields, ranges and defaults: GET /v1/quantizers).\n\n"
    f"**sweep**: {_doc_before(sweep_spec, 'Rejected with')}\n\n"
    f"**search**: {_doc_before(search, 'The path,')}"
)


class JobCreate(BaseModel):
    """A job to run on an uploaded model (and, for accuracy, an uploaded dataset)."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=64)
    dataset_id: str | None = Field(default=None, min_length=1, max_length=64)
    spec: dict[str, Any] = Field(default_factory=dict, description=SPEC_DESCRIPTION)
    kind: JobKind = JobKind.QUANTIZE


class JobBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobCreate] = Field(min_length=1, max_length=256)


class JobError(BaseModel):
    code: str
    message: str


class JobPublic(BaseModel):
    id: str
    kind: JobKind
    status: StatusName
    stage: str | None
    progress: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model_id: str
    dataset_id: str | None
    spec: dict[str, Any]
    error: JobError | None
    summary: dict[str, Any] | None


class JobsPublic(BaseModel):
    """A page of jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    data: list[JobPublic]
    count: int = Field(description="Jobs matching the filters, over all pages.")
    next_cursor: str | None


class JobBatchPublic(BaseModel):
    data: list[JobPublic]
    count: int


class ArtifactPublic(BaseModel):
    name: str
    size_bytes: int
    sha256: str
    media_type: str


class ParameterPublic(BaseModel):
    """One spec field: its type, the values or range it accepts and its default."""

    name: str
    type: Literal["integer", "number", "boolean", "string", "array"]
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: list[str] | None = None
    description: str = ""


class MethodPublic(BaseModel):
    name: str
    description: str
    default_support: str
    parameters: list[str]


class QuantizersPublic(BaseModel):
    methods: list[MethodPublic]
    parameters: list[ParameterPublic]
    defaults: dict[str, Any]


class HealthPublic(BaseModel):
    status: Literal["ok"]


class ReadyPublic(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]
