"""Bodies of the routes pipelines use beside the job routes: webhooks and spec checks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from quantcore import JobKind


class WebhookSecretPublic(BaseModel):
    """The team's webhook signing secret (HMAC-SHA256 key)."""

    secret: str


class WebhookDeliveryPublic(BaseModel):
    """Where a job's webhook stands: ``waiting`` until the job is final, then ``pending``
    (being tried), ``delivered`` or ``failed`` (out of attempts, or the host refused)."""

    url: str
    state: Literal["waiting", "pending", "delivered", "failed"]
    delivery_id: str | None
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class SpecCheck(BaseModel):
    """A spec to check as ``POST /v1/jobs`` would, without submitting anything."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind = JobKind.QUANTIZE
    spec: dict[str, Any] = Field(default_factory=dict)


class SpecChecked(BaseModel):
    kind: JobKind
    spec: dict[str, Any] = Field(description="The spec as it would be applied.")
