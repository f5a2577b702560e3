"""Request and response bodies (Pydantic), in families per resource.

Routes answer with these and never with database rows; field names are those of
``docs/api.md`` and must not change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from quantcore import JobKind

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


class UploadCreate(BaseModel):
    """A presigned upload: the file the caller is about to PUT to S3."""

    model_config = ConfigDict(extra="forbid")

    filename: Annotated[str, StringConstraints(min_length=1, max_length=1000)] = Field(
        description="The file's name; its suffix names the format (.onnx, .safetensors, "
        ".npz), as with POST /v1/models.")
    size_bytes: int = Field(ge=1, description="The file's exact size in bytes.")
    sha256: Annotated[str, StringConstraints(pattern="^[0-9a-fA-F]{64}$")] = Field(
        description="The file's SHA-256, in hex.")


class UploadPublic(BaseModel):
    """Where and how to PUT the file, and until when."""

    id: str
    url: str = Field(description="The presigned URL to PUT the file's bytes to.")
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(
        description="Headers to send with the PUT, exactly as given: the URL's signature "
        "covers them (Content-Length, x-amz-checksum-sha256).")
    filename: str
    size_bytes: int
    sha256: str
    expires_at: datetime = Field(description="The URL is refused by the store after this.")
    complete_by: datetime = Field(
        description="POST /v1/models/uploads/{id}/complete before this; after it the upload "
        "is unknown (404) and its object deleted.")


class DatasetPublic(BaseModel):
    id: str
    sha256: str
    size_bytes: int
    arrays: dict[str, list[int]]
    created_at: datetime


# The spec shapes of the three kinds, for callers (the OpenAPI document shows it on
# JobCreate.spec); ranges and defaults of the quantize fields are served by GET /v1/quantizers.
SPEC_DESCRIPTION = """The job's spec; its shape depends on `kind`. Unknown fields are refused \
(422 `invalid_spec`, naming the field).

**quantize**: a quantize spec. Every field is optional: `method`, `bits`, `rounding`, \
`support`, `support_value`, `normalize`, `deadzone_ratio`, `mu`, `exponent_bits`, \
`mantissa_bits`, `granularity`, `include`, `exclude`, `min_elements`, `keep_small`, \
`overrides`, `entropy_coding`, `target`, `rdoq` (fields, ranges and defaults: GET \
/v1/quantizers). The job answers with the spec as applied, every default filled in. `target` \
replaces `bits`: \
`{"weight_sqnr_db": X}` or `{"bits_per_weight": R}`, met with one step size shared by every \
tensor (the report's `allocation` shows it); `rdoq: true` chooses each code for distortion \
plus rate, `rdoq: "trellis"` (with a target) the whole path of codes, by trellis-coded \
quantization, `rdoq: "auto"` (with a target) whichever of the two codes the model smaller \
(scalar only where it saves 2% or more: the trellis packages decode faster).

**sweep**: a base quantize spec and a grid of values; the job measures one point per combination:

    {"base": {<a quantize spec>},
     "grid": {"bits": [2, 3], "method": ["uniform", "deadzone"],
              "granularity": ["model", "layer"], "support": ["jayant", "value"],
              "support_value": [1.0, 1.5, 2.0], "rounding": [...], "deadzone_ratio": [...]}}

The grid may vary `bits`, `method`, `granularity`, `support`, `support_value`, `rounding` \
and `deadzone_ratio`; each is optional and, when present, a non-empty list without repeats. \
The points are the cartesian product of the lists, except that `support_value` combines \
only with the supports that take a value (`value`: a threshold in standard deviations; \
`percentile`: a percentile of |w|): `"support": ["jayant", "value"]` with \
`"support_value": [1, 2, 3]` gives jayant once and value three times per combination of the \
other fields. A point's support is the grid's, else the base spec's, else the method's \
default. Refused with 422 `invalid_spec` before any work: an empty grid, an empty or \
repeating list, a `support_value` list without a support that takes a value, a point whose \
spec is invalid (the message names the point), two points that give the same spec, or more \
points than the service allows (its `max_sweep_points` setting, 64 by default).

**search**: the smallest package whose accuracy drop stays within a budget:

    {"base": {<a quantize spec>},
     "max_top1_drop": 0.01,
     "candidates": {"bits": [2, 3, 4, 5, 6, 7, 8], "method": ["uniform", "deadzone"]},
     "mixed_precision": true}

Every field is optional. `max_top1_drop` (default 0.01) is the largest accepted drop, a \
fraction in [0, 1]: with labels in the dataset it bounds the drop of top-1 accuracy; without \
labels, the share of samples whose top-1 class changes. `candidates` is a grid with the \
fields and rules of a sweep's `grid` (default `{"bits": [2, 3, 4, 5, 6, 7, 8]}`), and counts \
against the same limit. `mixed_precision` (default true): after the candidates, lower single \
layers one bit at a time while the whole model stays within the budget. The evaluations are \
capped at the same limit; the report says when the search stopped there. A search needs \
`dataset_id`: without one it is refused with 422 `invalid_dataset`. Patterns (`include`, \
`exclude`, `overrides[].match`) are RE2 regular expressions: no backreferences or lookaround."""


LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
Labels = Annotated[dict[LabelKey, LabelValue], Field(
    max_length=32,
    description="Up to 32 labels, key to value: keys of 1 to 63 letters, digits and . _ / - "
    "(starting with a letter or digit), values up to 200 characters. Filter with "
    "GET /v1/jobs?label=key=value.",
)]


class JobCreate(BaseModel):
    """A job to run on an uploaded model (and, for accuracy, an uploaded dataset)."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=64)
    dataset_id: str | None = Field(default=None, min_length=1, max_length=64)
    spec: dict[str, Any] = Field(default_factory=dict, description=SPEC_DESCRIPTION)
    kind: JobKind = JobKind.QUANTIZE
    name: str | None = Field(default=None, min_length=1, max_length=200,
                             description="A name for people; need not be unique.")
    labels: Labels = Field(default_factory=dict)
    callback_url: str | None = Field(
        default=None, min_length=1, max_length=2000,
        description="An http(s) URL that is POSTed the job, signed, once it is final "
        "(docs/api.md, Webhooks); its host must be allowed by the service.",
    )


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
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    callback_url: str | None = None


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


class ArtifactLinkPublic(BaseModel):
    """A presigned URL that downloads one artifact straight from the S3 store."""

    name: str
    url: str = Field(description="GET it, without the API key: the signature authorises it. "
                     "The store answers the file as an attachment and supports Range.")
    method: Literal["GET"] = "GET"
    size_bytes: int
    sha256: str = Field(description="Check the downloaded bytes against it.")
    media_type: str
    expires_at: datetime = Field(description="The store refuses the URL after this.")


class ParameterPublic(BaseModel):
    """One spec field: its type, the values or range it accepts and its default."""

    name: str
    type: Literal["integer", "number", "boolean", "string", "array", "object"]
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
