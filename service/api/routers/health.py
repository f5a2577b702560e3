"""``/healthz`` (the process answers) and ``/readyz`` (database, broker and storage answer)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.api.deps import CtxDep
from service.api.routers.common import errors
from service.api.schemas import HealthPublic, ReadyPublic
from service.errors import DependencyUnavailableError
from service.queue.enqueue import check_broker

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, summary="Liveness")
def healthz() -> HealthPublic:
    return HealthPublic(status="ok")


def _check_all(ctx: CtxDep) -> dict[str, str]:
    checks: dict[str, str] = {}
    probes = {
        "database": ctx.db.ping,
        "broker": lambda: check_broker(ctx.settings),
        "storage": ctx.storage.healthcheck,
    }
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # any failure of a dependency is "not ready", with its cause
            checks[name] = f"unavailable: {getattr(exc, 'message', None) or exc}"
    return checks


@router.get("/readyz", response_model=ReadyPublic, responses=errors(503), summary="Readiness")
async def readyz(ctx: CtxDep) -> ReadyPublic:
    """503 naming each dependency that does not answer."""
    checks = await run_in_threadpool(_check_all, ctx)
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        raise DependencyUnavailableError(
            f"not ready: {', '.join(failed)} unavailable", code="not_ready",
            details={"checks": checks},
        )
    return ReadyPublic(status="ready", checks=checks)
