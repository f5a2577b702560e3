"""What pipelines use beside submitting and reading jobs: the report page shown inline,
deleting jobs, models and datasets, webhook secrets and deliveries, and checking a spec."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from quantcore import validate_job
from service.api.deps import CtxDep, JobDep, PrincipalDep
from service.api.downloads import report_page_headers
from service.api.pipeline_schemas import (
    SpecCheck,
    SpecChecked,
    WebhookDeliveryPublic,
    WebhookSecretPublic,
)
from service.api.removal import remove_dataset, remove_job, remove_model
from service.api.routers.common import errors
from service.errors import ConflictError, NotFoundError
from service.store.jobs import JobStatus

router = APIRouter(prefix="/v1")

NO_CONTENT: dict[int | str, dict[str, Any]] = {204: {"description": "Deleted."}}


@router.get(
    "/jobs/{job_id}/report.html", tags=["jobs"], response_class=StreamingResponse,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}},
                     "description": "report.html, to show in a browser or a frame."},
               **errors(401, 404, 409, 429)},
    summary="The job's report as a page, shown inline",
)
def report_page(job: JobDep, ctx: CtxDep) -> StreamingResponse:
    """Served with a Content-Security-Policy that runs no script and loads nothing from
    elsewhere; ``frame-ancestors`` is the ``report_frame_ancestors`` setting."""
    if job.status != JobStatus.SUCCEEDED:
        raise ConflictError(
            f"job {job.id!r} is {job.status}; its report exists once it has succeeded",
            code="job_not_succeeded", details={"status": job.status},
        )
    artifact = ctx.jobs.artifact(job.id, "report.html")
    if artifact is None:
        raise NotFoundError(f"job {job.id!r} has no report.html", details={"name": "report.html"})
    return StreamingResponse(ctx.storage.iter_bytes(artifact.storage_key),
                             media_type="text/html; charset=utf-8",
                             headers=report_page_headers(ctx.settings, artifact))


@router.delete("/jobs/{job_id}", tags=["jobs"], status_code=204, response_class=Response,
               responses={**NO_CONTENT, **errors(401, 404, 409, 429)}, summary="Delete a job")
async def delete_job(job_id: str, ctx: CtxDep, principal: PrincipalDep) -> Response:
    """A final job, with its artifacts; a queued or running job is 409 ``job_not_finished``
    (cancel it first)."""
    await run_in_threadpool(remove_job, ctx, job_id, team_id=principal.team_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/models/{model_id}", tags=["models"], status_code=204, response_class=Response,
               responses={**NO_CONTENT, **errors(401, 404, 409, 429)}, summary="Delete a model")
async def delete_model(model_id: str, ctx: CtxDep, principal: PrincipalDep) -> Response:
    """A model that no job uses (409 ``resource_in_use`` names the jobs that do)."""
    await run_in_threadpool(remove_model, ctx, model_id, team_id=principal.team_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/datasets/{dataset_id}", tags=["datasets"], status_code=204,
               response_class=Response, responses={**NO_CONTENT, **errors(401, 404, 409, 429)},
               summary="Delete an evaluation set")
async def delete_dataset(dataset_id: str, ctx: CtxDep, principal: PrincipalDep) -> Response:
    """An evaluation set that no job uses (409 ``resource_in_use`` otherwise)."""
    await run_in_threadpool(remove_dataset, ctx, dataset_id, team_id=principal.team_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/jobs/{job_id}/webhook", tags=["webhooks"], response_model=WebhookDeliveryPublic,
            responses=errors(401, 404, 429), summary="Where the job's webhook stands")
def job_webhook(job: JobDep, ctx: CtxDep) -> WebhookDeliveryPublic:
    """404 when the job has no ``callback_url``."""
    if job.callback_url is None:
        raise NotFoundError(f"job {job.id!r} has no callback_url", details={"job_id": job.id})
    found = ctx.webhooks.delivery(job.id)
    if found is None:
        return WebhookDeliveryPublic(url=job.callback_url, state="waiting", delivery_id=None,
                                     attempts=0, last_status=None, last_error=None,
                                     next_attempt_at=None, delivered_at=None)
    pending = found.state == "pending"
    return WebhookDeliveryPublic(
        url=found.url, state=found.state,  # type: ignore[arg-type]
        delivery_id=found.delivery_id, attempts=found.attempts, last_status=found.last_status,
        last_error=found.last_error, next_attempt_at=found.next_attempt_at if pending else None,
        delivered_at=found.delivered_at,
    )


@router.get("/webhooks/secret", tags=["webhooks"], response_model=WebhookSecretPublic,
            responses=errors(401, 429), summary="The team's webhook signing secret")
def webhook_secret(ctx: CtxDep, principal: PrincipalDep) -> WebhookSecretPublic:
    """Made on first use; deliveries carry ``X-Quantserve-Signature`` computed with it."""
    return WebhookSecretPublic(secret=ctx.webhooks.secret(principal.team_id))


@router.post("/webhooks/secret", tags=["webhooks"], response_model=WebhookSecretPublic,
             responses=errors(401, 429), summary="Replace the team's webhook signing secret")
def rotate_webhook_secret(ctx: CtxDep, principal: PrincipalDep) -> WebhookSecretPublic:
    """The old secret stops signing at once, retries of earlier deliveries included."""
    return WebhookSecretPublic(secret=ctx.webhooks.rotate_secret(principal.team_id))


@router.post("/quantizers/check", tags=["quantizers"], response_model=SpecChecked,
             responses=errors(400, 401, 422, 429), summary="Check a spec without submitting a job")
def check_spec(body: SpecCheck, ctx: CtxDep, _: PrincipalDep) -> SpecChecked:
    """200 with the spec as it would be applied, or 422 ``invalid_spec`` with the message
    ``POST /v1/jobs`` would give."""
    applied = validate_job(body.kind, body.spec, ctx.settings.job_limits())
    return SpecChecked(kind=body.kind, spec=applied)
