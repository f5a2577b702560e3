"""``/healthz`` (the process answers) and ``/readyz`` (database, broker and storage answer).

``/healthz`` touches no dependency and runs on the event loop, never in the thread pool, so
it answers at once even when every pool thread waits on a frozen dependency. ``/readyz``
answers from the probes ``service.api.readiness`` runs in the background, so it never waits
on a dependency either; it names each dependency and its state, never a host or a port.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import CtxDep
from service.api.routers.common import errors
from service.api.schemas import HealthPublic, ReadyPublic
from service.errors import DependencyUnavailableError

router = APIRouter(tags=["health"])

_HEALTHY = HealthPublic(status="ok")


@router.get("/healthz", response_model=HealthPublic, summary="Liveness")
async def healthz() -> HealthPublic:
    return _HEALTHY


@router.get("/readyz", response_model=ReadyPublic, responses=errors(503), summary="Readiness")
async def readyz(ctx: CtxDep) -> ReadyPublic:
    """503 naming each dependency that does not answer."""
    await ctx.readiness.first_results()
    checks = ctx.readiness.checks()
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        raise DependencyUnavailableError(
            f"not ready: {', '.join(failed)} unavailable", code="not_ready",
            details={"checks": checks},
        )
    return ReadyPublic(status="ready", checks=checks)
