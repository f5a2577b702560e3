"""``GET /v1/jobs/{job_id}/events``: a job's status and progress as server-sent events.

The stream opens with the job as it is, then sends it again at every change of status, stage
or progress (the job is read every ``events_poll_interval_s``), and ends after a final status.
Every event is ``event: job`` with the job's JSON (as ``GET /v1/jobs/{id}``) as ``data`` and a
counting ``id``; a comment line keeps an idle connection open every 15 s. A stream lasts at
most an hour: reconnect (browsers' EventSource does by itself) to go on, and the first event
is the job as it is then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import AppContext, CtxDep, JobDep
from service.api.routers.common import errors, job_public
from service.store.jobs import FINAL
from service.store.records import JobRecord

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

KEEPALIVE_S = 15.0
MAX_STREAM_S = 3600.0
FINAL_NAMES = frozenset(s.value for s in FINAL)


def job_event(seq: int, job: JobRecord) -> str:
    return f"id: {seq}\nevent: job\ndata: {job_public(job).model_dump_json()}\n\n"


async def job_stream(ctx: AppContext, job: JobRecord, request: Request) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    started = last_sent = time.monotonic()
    seq = 0
    last: tuple[str, str | None, float] | None = None
    current: JobRecord | None = job
    while current is not None:
        state = (current.status, current.stage, current.progress)
        now = time.monotonic()
        if state != last:
            seq += 1
            last, last_sent = state, now
            yield job_event(seq, current)
        if current.status in FINAL_NAMES or now - started > MAX_STREAM_S:
            return
        if now - last_sent >= KEEPALIVE_S:
            last_sent = now
            yield ": keep-alive\n\n"
        await asyncio.sleep(ctx.settings.events_poll_interval_s)
        if await request.is_disconnected():
            return
        current = await run_in_threadpool(ctx.jobs.get, job.id, team_id=job.team_id)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "Events `job` with the job's JSON, until it is final."},
        **errors(401, 404, 429),
    },
    summary="A job's status and progress as server-sent events",
)
async def job_events(job: JobDep, ctx: CtxDep, request: Request) -> StreamingResponse:
    """Ends after the event that carries a final status (``succeeded``, ``failed``,
    ``cancelled``)."""
    return StreamingResponse(
        job_stream(ctx, job, request), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["job_event", "job_stream", "router"]
