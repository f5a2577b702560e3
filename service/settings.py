"""The one settings object read by the API, the workers and the CLI.

Every field comes from the environment with the prefix ``QUANTSERVE_`` (``QUANTSERVE_DATABASE_URL``,
``QUANTSERVE_STORAGE=s3``, ...) or from a ``.env`` file in the working directory. The defaults
are the embedded shape: SQLite database, SQLite broker and a local storage folder, all under
``./var``, no servers to install. The deployed shape changes only these values.

S3 credentials are never settings: boto3 reads the standard ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` variables (or an instance role) itself.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from quantcore import InputLimits, JobLimits

GIB = 1 << 30
_INPUTS = InputLimits()  # the core's defaults, which the settings below repeat


class Settings(BaseSettings):
    """Service settings; the field descriptions are the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix="QUANTSERVE_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = Field(
        default="sqlite:///./var/quantserve.db",
        description="SQLAlchemy URL of the job store: SQLite embedded, "
        "postgresql+psycopg://user@host/db deployed.",
    )
    broker_url: str = Field(
        default="sqla+sqlite:///./var/broker.db",
        description="Celery broker URL: an embedded SQLite broker by default, "
        "redis://host:6379/0 deployed.",
    )
    storage: Literal["local", "s3"] = Field(
        default="local", description="Where uploads and artifacts live: a local folder or S3."
    )
    storage_path: str = Field(
        default="./var/storage",
        description="Folder of the local storage (storage=local); also the spool folder "
        "for uploads in progress.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible store (MinIO, ...); unset for AWS S3.",
    )
    s3_bucket: str = Field(default="quantserve", description="Bucket for storage=s3.")
    s3_region: str = Field(default="us-east-1", description="Region for storage=s3.")
    s3_public_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint that callers reach the store at, for presigned upload and "
        "download URLs (storage=s3), when it differs from s3_endpoint_url (a store on an "
        "internal network behind a public name); unset, the URLs use s3_endpoint_url.",
    )
    presigned_upload_ttl_s: float = Field(
        default=3600.0, gt=0, le=604800,
        description="Seconds a presigned upload URL (POST /v1/models/uploads) is valid; the "
        "upload may be completed for as long again after that, then it is forgotten and its "
        "object deleted.",
    )
    presigned_download_ttl_s: float = Field(
        default=900.0, gt=0, le=604800,
        description="Seconds a presigned artifact download URL (GET "
        "/v1/jobs/{id}/artifacts/{name}/url) is valid.",
    )
    max_upload_bytes: int = Field(
        default=4 * GIB, gt=0, description="Largest accepted upload in bytes; larger gives 413."
    )
    auth_enabled: bool = Field(
        default=False,
        description="Require an API key (Authorization: Bearer KEY or X-API-Key); "
        "off, every caller acts as the 'default' team.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed by CORS (the portal): comma-separated "
        '(https://a,https://b) or a JSON list (["https://a"]); empty turns CORS off.',
    )
    rate_limit_per_minute: int = Field(
        default=600,
        ge=0,
        description="Requests per minute per API key (per client address with auth off); "
        "0 turns the limit off. Kept in Redis when the broker is Redis.",
    )
    job_soft_time_limit_s: float = Field(
        default=3300.0, gt=0, description="Soft time limit of one job; past it the job fails "
        "with code 'timeout'. Must be below job_time_limit_s."
    )
    job_time_limit_s: float = Field(
        default=3600.0, gt=0, description="Hard time limit of one job; the worker process "
        "running it is killed."
    )
    max_sweep_points: int = Field(
        default=64, gt=0, description="Most spec points a sweep or search job may have."
    )
    eval_batch_size: int = Field(
        default=256, gt=0, description="Samples per onnxruntime batch when evaluating accuracy."
    )
    fidelity_budget_s: float = Field(
        default=JobLimits.fidelity_budget_s, gt=0,
        description="Seconds the fidelity check may spend measuring layers one by one when "
        "a quantized model's output SQNR is under the warning threshold; the report says how "
        "many were measured.",
    )
    fidelity_max_params: int = Field(
        default=JobLimits.fidelity_max_params, ge=0,
        description="Parameters over which a quantize job without an evaluation set skips the "
        "fidelity check (both models run on synthetic inputs); the report says so. 0 skips "
        "it always.",
    )
    max_array_bytes: int = Field(
        default=_INPUTS.max_array_bytes, gt=0,
        description="Largest tensor or array an input file may declare (shape times item "
        "size), in bytes: .npy arrays, safetensors tensors, ONNX tensors and their external "
        "data; larger gives 413.",
    )
    max_inflated_bytes: int = Field(
        default=_INPUTS.max_inflated_bytes, gt=0,
        description="Most bytes the arrays of one .npz (model or dataset) may inflate to, as "
        "its zip headers declare and as counted while inflating; more gives 413.",
    )
    max_inflation_ratio: float = Field(
        default=_INPUTS.max_inflation_ratio, gt=1,
        description="Most times an .npz may inflate its own size once it inflates past "
        "64 MiB; more gives 413 (a zip bomb).",
    )
    max_npz_members: int = Field(
        default=_INPUTS.max_npz_members, gt=0,
        description="Most arrays one .npz may hold; more gives 413.",
    )
    max_header_bytes: int = Field(
        default=_INPUTS.max_header_bytes, gt=0,
        description="Largest safetensors JSON header in bytes; larger gives 413.",
    )
    max_json_depth: int = Field(
        default=_INPUTS.max_json_depth, ge=4, le=256,
        description="Deepest nesting of JSON a caller sends: a request body, a multipart spec "
        "field, a safetensors header; deeper gives 400 (422 for a spec field or a model).",
    )
    db_connect_timeout_s: float = Field(
        default=3.0, gt=0, description="Seconds to wait for a PostgreSQL connection (a new one, "
        "or a free one of the pool) before the database counts as unavailable."
    )
    db_statement_timeout_s: float = Field(
        default=15.0, ge=0, description="PostgreSQL statement timeout in seconds (0: none); "
        "migrations run without it."
    )
    broker_timeout_s: float = Field(
        default=2.0, gt=0, description="Seconds a publish (a submission) or a broker probe "
        "waits for the broker; past it the API answers 503."
    )
    broker_visibility_timeout_s: int = Field(
        default=60, ge=10, description="Redis: seconds after which a message taken by a worker "
        "and not acknowledged is handed out again (a dead worker's queued job runs elsewhere; "
        "the copy of a job still running finds it alive and is dropped)."
    )
    storage_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds an S3 request may wait to connect or between "
        "two reads; one retry follows."
    )
    dependency_retry_s: float = Field(
        default=300.0, ge=0, description="How long a job task keeps retrying, with backoff, a "
        "database or storage call that cannot reach its server, before it gives the message "
        "back (database) or fails the job with storage_unavailable (storage)."
    )
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between two heartbeats a worker writes on the "
        "job it runs."
    )
    heartbeat_timeout_s: float = Field(
        default=60.0, gt=0, description="A running job whose heartbeat is older than this is "
        "taken back by the reaper: queued again and republished, or failed worker_lost after "
        "its third run."
    )
    reaper_interval_s: float = Field(
        default=10.0, gt=0, description="Seconds between two passes of the reaper that each "
        "worker runs (one pass at a time across workers)."
    )
    worker_memory_limit_mb: int = Field(
        default=0, ge=0, description="Address-space limit of each worker pool process in MiB "
        "(RLIMIT_AS; 0: none). A job that runs out fails with resource_limit and the "
        "process is replaced."
    )
    worker_warm_up: bool = Field(
        default=True, description="Each worker pool process runs a small quantization as it "
        "starts, on a thread of its own, so that its first job finds the kernels and "
        "libraries loaded (a pool process's first job otherwise loads them: 0.5 s)."
    )
    worker_stop_grace_s: float = Field(
        default=10.0, ge=0, description="serve: seconds its worker may finish running jobs "
        "when serve stops, before it is killed (a killed job runs again after a restart)."
    )
    metrics_token: str | None = Field(
        default=None, description="With auth on, /metrics requires 'Authorization: Bearer "
        "<token>' with this token (unset: /metrics answers 403 while auth is on)."
    )
    auth_failures_per_minute: int = Field(
        default=20, ge=0, description="Failed API-key checks allowed per client address per "
        "minute before it gets 429 (0: no limit)."
    )
    readiness_interval_s: float = Field(
        default=2.0, gt=0, description="Seconds between two background probes of each "
        "dependency; /readyz answers from the last ones."
    )
    log_level: str = Field(default="INFO", description="Log level of the JSON logs.")
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the API listens on.")
    keep_alive_s: int = Field(
        default=75, ge=1, description="Seconds the API keeps an idle HTTP connection open. "
        "Longer than clients' own idle expiry (httpx and uvicorn both 5 s), so that a client "
        "never sends a request on a connection the server is closing."
    )
    portal_enabled: bool = Field(
        default=True, description="Serve the team portal at /ui/ (and its assets)."
    )
    session_ttl_hours: float = Field(
        default=12.0, gt=0, description="How long a portal sign-in (cookie session) lasts."
    )
    report_frame_ancestors: str = Field(
        default="'self'",
        description="CSP frame-ancestors of GET /v1/jobs/{id}/report.html: the sources that "
        "may show the report in a frame ('self', https://wiki.example.com, or 'none').",
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts a job's callback_url may name, comma-separated or a JSON list: "
        "exact names or IP addresses, *.example.com for its subdomains, * for any host with "
        "public addresses. Loopback, private, link-local and other internal addresses are "
        "refused unless an entry other than * names the host. Empty: no callbacks.",
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="Attempts to deliver one webhook before giving up."
    )
    webhook_backoff_s: float = Field(
        default=2.0, gt=0,
        description="Delay before the first retry of a webhook; it doubles with each "
        "attempt, up to an hour.",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds one webhook POST may take."
    )
    webhook_poll_interval_s: float = Field(
        default=1.0, gt=0,
        description="How often each API process looks for finished jobs to announce and "
        "webhooks to retry.",
    )
    retention_days: float = Field(
        default=0.0, ge=0,
        description="Finished jobs older than this many days are deleted with their "
        "artifacts, then uploads older than that which no job uses; 0 keeps everything.",
    )
    retention_sweep_interval_s: float = Field(
        default=3600.0, gt=0, description="Seconds between two retention sweeps."
    )
    events_poll_interval_s: float = Field(
        default=0.5, gt=0,
        description="How often a job's event stream (GET /v1/jobs/{id}/events) reads the job.",
    )

    @field_validator("cors_origins", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return value

    @model_validator(mode="after")
    def _soft_limit_below_hard(self) -> Settings:
        # On Celery's event-loop pool the hard clock starts only when the soft limit fires,
        # so a soft limit at or past the hard one would stretch the hard limit too.
        soft, hard = self.job_soft_time_limit_s, self.job_time_limit_s
        if soft >= hard:
            raise ValueError(
                f"job_soft_time_limit_s={soft:g} must be below job_time_limit_s={hard:g}"
            )
        return self

    def input_limits(self) -> InputLimits:
        """The core's bounds on input files, from these settings."""
        return InputLimits(
            max_array_bytes=self.max_array_bytes, max_inflated_bytes=self.max_inflated_bytes,
            max_inflation_ratio=self.max_inflation_ratio, max_npz_members=self.max_npz_members,
            max_header_bytes=self.max_header_bytes, max_json_depth=self.max_json_depth,
        )

    def job_limits(self) -> JobLimits:
        """The core's bounds for a job, from these settings."""
        return JobLimits(max_sweep_points=self.max_sweep_points,
                         eval_batch_size=self.eval_batch_size, inputs=self.input_limits(),
                         fidelity_budget_s=self.fidelity_budget_s,
                         fidelity_max_params=self.fidelity_max_params)

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
