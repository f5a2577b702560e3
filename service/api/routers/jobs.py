"""``/v1/jobs``: submit (JSON or multipart, single or batch), list, read, cancel, report,
artifacts."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from quantcore import JobKind, validate_job
from service.api.artifact_links import artifact_link
from service.api.catalog import (
    check_dataset_file,
    check_model_file,
    register_dataset,
    register_model,
)
from service.api.deps import CtxDep, JobDep, PrincipalDep
from service.api.downloads import artifact_response
from service.api.jsonbody import parse_json
from service.api.report_schemas import JobReport
from service.api.routers.common import errors, job_public
from service.api.schemas import (
    LABEL_KEY_PATTERN,
    ArtifactLinkPublic,
    ArtifactPublic,
    JobBatchCreate,
    JobBatchPublic,
    JobCreate,
    JobPublic,
    JobsPublic,
    StatusName,
)
from service.api.submission import submit_jobs
from service.api.uploads import check_content_length, content_type, read_multipart
from service.api.webhooks import check_callback_url
from service.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from service.queue.enqueue import revoke
from service.store.jobs import JobStatus
from service.store.records import ArtifactRecord, JobRecord

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
# Bodies the submit routes parse themselves; their schemas are added to the document.
BODY_MODELS = (JobCreate, JobBatchCreate)
# What a submission (one job or a batch) can be refused with; 503: broker or storage down.
SUBMIT_ERRORS = errors(400, 401, 404, 413, 415, 422, 429, 503, 507)

MAX_JSON_BYTES = 1 << 20
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200,
           description="A retried submission with the same key returns the first job; the "
                       "key sent with another request (model, dataset, kind or applied spec) "
                       "is refused with 422 idempotency_key_reused."),
]

SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "model": {"type": "string", "format": "binary"},
                        "dataset": {"type": "string", "format": "binary"},
                        "spec": {"type": "string",
                                 "description": "The spec as JSON text, shaped as "
                                 "JobCreate's spec for the kind."},
                        "kind": {"type": "string", "enum": ["quantize", "sweep", "search"]},
                        "name": {"type": "string"},
                        "labels": {"type": "string",
                                   "description": "The labels as a JSON object text."},
                        "callback_url": {"type": "string"},
                    },
                }
            },
        },
    }
}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobBatchCreate"}}
        },
    }
}


async def _json_body(request: Request, max_depth: int) -> Any:
    if content_type(request) != "application/json":
        raise UnsupportedMediaTypeError(
            f"Content-Type {content_type(request) or 'none'!r} is not accepted here; "
            "send application/json"
        )
    check_content_length(request, MAX_JSON_BYTES)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise PayloadTooLargeError(f"the JSON body is over {MAX_JSON_BYTES} bytes")
    return parse_json(bytes(body), what="the body", max_depth=max_depth)


Body = TypeVar("Body", bound=BaseModel)


def _validated(schema: type[Body], data: Any) -> Body:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                   for e in exc.errors()]
        first = details[0] if details else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise UnprocessableError(f"{where}: {first['msg']}", details=details) from None


def _check_job_file(field: str, filename: str) -> None:
    if field == "model":
        check_model_file(filename)
    else:
        check_dataset_file(filename)


async def _multipart_job(request: Request, ctx: CtxDep, principal: PrincipalDep) -> JobCreate:
    form = await read_multipart(
        request, spool_dir=ctx.spool_dir, max_bytes=ctx.settings.max_upload_bytes,
        file_fields=frozenset({"model", "dataset"}),
        text_fields=frozenset({"spec", "kind", "name", "labels", "callback_url"}),
        check_file=_check_job_file,
    )
    try:
        model_file = form.files.get("model")
        if model_file is None:
            raise UnprocessableError("multipart field 'model' is required (the model file)")
        spec_text = form.fields.get("spec", "").strip() or "{}"
        spec = parse_json(spec_text, what="form field 'spec'",
                          max_depth=ctx.settings.max_json_depth, error=UnprocessableError,
                          code="invalid_spec")
        data: dict[str, Any] = {"spec": spec, "model_id": "pending"}
        if "kind" in form.fields:
            data["kind"] = form.fields["kind"]
        data.update(_multipart_extras(form.fields))
        # kind and spec are checked before any file is inspected or stored
        early = _validated(JobCreate, data)
        await run_in_threadpool(partial(validate_job, early.kind, early.spec,
                                        ctx.settings.job_limits(),
                                        with_dataset="dataset" in form.files))
        data["model_id"] = (await register_model(ctx, principal, model_file)).id
        dataset_file = form.files.get("dataset")
        if dataset_file is not None:
            data["dataset_id"] = (await register_dataset(ctx, principal, dataset_file)).id
        return _validated(JobCreate, data)
    finally:
        form.cleanup()


def _multipart_extras(fields: dict[str, str]) -> dict[str, Any]:
    """The optional name, labels (JSON object text) and callback_url of a multipart job."""
    extras: dict[str, Any] = {k: fields[k].strip() for k in ("name", "callback_url")
                              if fields.get(k, "").strip()}
    if fields.get("labels", "").strip():
        try:
            extras["labels"] = json.loads(fields["labels"])
        except json.JSONDecodeError as exc:
            raise UnprocessableError(f"form field 'labels' is not valid JSON: {exc}") from None
    return extras


def _check_callbacks(ctx: CtxDep, creates: list[JobCreate]) -> None:
    for create in creates:
        if create.callback_url is not None:
            check_callback_url(create.callback_url, ctx.settings)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=SUBMIT_ERRORS,
    openapi_extra=SUBMIT_BODY,
    summary="Submit a job",
)
async def submit_job(
    request: Request, response: Response, ctx: CtxDep, principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    """JSON ``{model_id, dataset_id?, spec, kind?}``, or multipart with the files themselves."""
    if content_type(request) == "multipart/form-data":
        create = await _multipart_job(request, ctx, principal)
    else:
        create = _validated(JobCreate, await _json_body(request, ctx.settings.max_json_depth))
    _check_callbacks(ctx, [create])
    (submitted,) = await submit_jobs(ctx, principal, [create], idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{submitted.job.id}"
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return job_public(submitted.job)


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobBatchPublic,
    responses=SUBMIT_ERRORS,
    openapi_extra=BATCH_BODY,
    summary="Submit many jobs",
)
async def submit_batch(
    request: Request, ctx: CtxDep, principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JobBatchPublic:
    """``{jobs: [...]}``: every job is checked before any is accepted."""
    batch = _validated(JobBatchCreate, await _json_body(request, ctx.settings.max_json_depth))
    _check_callbacks(ctx, batch.jobs)
    submitted = await submit_jobs(ctx, principal, batch.jobs, idempotency_key)
    data = [job_public(s.job) for s in submitted]
    return JobBatchPublic(data=data, count=len(data))


def _encode_cursor(job: JobRecord) -> str:
    raw = json.dumps({"t": job.created_at.isoformat(), "i": job.id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _label_filter(text: str) -> tuple[str, str | None]:
    key, has_value, value = text.partition("=")
    if not re.match(LABEL_KEY_PATTERN, key) or len(value) > 200:
        raise UnprocessableError(f"label={text!r} is not key or key=value (a key is 1 to 63 "
                                 "letters, digits and . _ / -)", details={"label": text})
    return key, value if has_value else None


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        job_id = str(data["i"])
        if "\x00" in job_id:  # ids are text, which cannot hold NUL
            raise ValueError(job_id)
        return datetime.fromisoformat(data["t"]), job_id
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError,
            RecursionError):
        raise BadRequestError(f"{cursor=} is not a cursor this service issued") from None


@router.get("", response_model=JobsPublic, responses=errors(400, 401, 422, 429),
            summary="List jobs")
def list_jobs(
    ctx: CtxDep,
    principal: PrincipalDep,
    status: Annotated[StatusName | None, Query(description="Only jobs in this status.")] = None,
    model_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500,
                                        description="next_cursor of the previous page")] = None,
    kind: Annotated[JobKind | None, Query(description="Only jobs of this kind.")] = None,
    label: Annotated[list[str] | None, Query(
        max_length=16, description="key=value (the label has that value) or key (the job "
        "has the label); repeat for several, all must match.")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description="Text in the "
                                   "job's name (any case), or the start of its id.")] = None,
) -> JobsPublic:
    """Newest first."""
    after = _decode_cursor(cursor) if cursor is not None else None
    page = ctx.jobs.page(team_id=principal.team_id, status=status, model_id=model_id,
                         limit=limit, after=after, kind=kind.value if kind else None,
                         labels=[_label_filter(text) for text in label or ()], text=q)
    return JobsPublic(data=[job_public(j) for j in page.jobs], count=page.count,
                      next_cursor=_encode_cursor(page.jobs[-1]) if page.more else None)


@router.get("/{job_id}", response_model=JobPublic, responses=errors(401, 404, 429),
            summary="A job")
def get_job(job: JobDep) -> JobPublic:
    return job_public(job)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=errors(401, 404, 409, 429),
             summary="Cancel a queued or running job")
async def cancel_job(job: JobDep, ctx: CtxDep) -> JobPublic:
    task_id = await run_in_threadpool(ctx.jobs.cancel, job.id)
    if task_id:
        await run_in_threadpool(revoke, task_id, ctx.settings)
    return job_public(await run_in_threadpool(_reload, ctx, job))


def _reload(ctx: CtxDep, job: JobRecord) -> JobRecord:
    return ctx.jobs.get(job.id, team_id=job.team_id) or job


# The report's shape is documented (``JobReport``) but not validated: the stored JSON is
# returned as it is, as reports of large models have thousands of layer rows.
REPORT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"model": JobReport, "description": "The report: its shape depends on the job's kind."},
}


@router.get("/{job_id}/report", response_model=None,
            responses={**REPORT_RESPONSE, **errors(401, 404, 409, 429)},
            summary="The job's report")
def get_report(job: JobDep) -> JSONResponse:
    if job.status != JobStatus.SUCCEEDED or job.report is None:
        raise ConflictError(
            f"job {job.id!r} is {job.status}; its report exists once it has succeeded",
            code="job_not_succeeded", details={"status": job.status},
        )
    return JSONResponse(job.report)


@router.get("/{job_id}/artifacts", response_model=list[ArtifactPublic],
            responses=errors(401, 404, 429), summary="The job's artifacts")
def list_artifacts(job: JobDep, ctx: CtxDep) -> list[ArtifactPublic]:
    return [ArtifactPublic(name=a.name, size_bytes=a.size_bytes, sha256=a.sha256,
                           media_type=a.media_type) for a in ctx.jobs.artifacts(job.id)]


@router.get(
    "/{job_id}/artifacts/{name}",
    responses={
        200: {"content": {"application/octet-stream": {}},
              "description": "The file; ETag is its sha256."},
        206: {"content": {"application/octet-stream": {}},
              "description": "The part a single Range asked for (Content-Range)."},
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        **errors(401, 404, 416, 429),
    },
    response_class=Response,
    summary="Download an artifact",
)
def download_artifact(
    name: str, job: JobDep, ctx: CtxDep, request: Request,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    range_: Annotated[str | None, Header(alias="Range", description="bytes=a-b, bytes=a- "
                                         "or bytes=-n (one range)")] = None,
) -> Response:
    return artifact_response(ctx.storage, _artifact(ctx, job, name), request.headers)


@router.head("/{job_id}/artifacts/{name}", response_class=Response,
             responses={200: {"description": "The download's headers, without the body."},
                        206: {"description": "The headers of the part a Range asks for."},
                        304: {"description": "Not modified."}, **errors(401, 404, 416, 429)},
             summary="An artifact's headers (size, ETag)")
def head_artifact(name: str, job: JobDep, ctx: CtxDep, request: Request) -> Response:
    return artifact_response(ctx.storage, _artifact(ctx, job, name), request.headers, head=True)


@router.get("/{job_id}/artifacts/{name}/url", response_model=ArtifactLinkPublic,
            responses=errors(401, 404, 409, 429),
            summary="A presigned URL that downloads an artifact straight from S3")
def artifact_url(name: str, job: JobDep, ctx: CtxDep) -> ArtifactLinkPublic:
    return artifact_link(ctx, _artifact(ctx, job, name))


def _artifact(ctx: CtxDep, job: JobRecord, name: str) -> ArtifactRecord:
    artifact = ctx.jobs.artifact(job.id, name)
    if artifact is None:
        raise NotFoundError(f"job {job.id!r} has no artifact {name!r}",
                            details={"name": name})
    return artifact
