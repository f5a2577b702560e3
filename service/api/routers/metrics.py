"""``/metrics``: Prometheus text format.

With auth on, the figures (jobs by status over all teams, queue depth) are not for every key
holder: a scraper sends ``Authorization: Bearer <metrics_token>``; without a configured token
the route answers 403.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from service.api.auth import key_from_headers
from service.api.deps import CtxDep
from service.api.routers.common import errors
from service.errors import ForbiddenError, UnauthorizedError

router = APIRouter(tags=["metrics"])


def _check_token(request: Request, ctx: CtxDep) -> None:
    if not ctx.settings.auth_enabled:
        return
    token = ctx.settings.metrics_token
    if not token:
        raise ForbiddenError("/metrics is closed while auth is on and no metrics token is set "
                             "(QUANTSERVE_METRICS_TOKEN)", code="metrics_token_not_set")
    presented = key_from_headers(request.headers) or ""
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise UnauthorizedError("send the metrics token as 'Authorization: Bearer <token>'",
                                code="invalid_metrics_token",
                                headers={"WWW-Authenticate": "Bearer"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics."},
               **errors(401, 403)},
    summary="Prometheus metrics",
)
async def metrics(request: Request, ctx: CtxDep) -> Response:
    _check_token(request, ctx)
    body = await run_in_threadpool(ctx.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
