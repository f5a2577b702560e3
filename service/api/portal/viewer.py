"""Who is looking at a portal page: the team of the session cookie (authentication on) or
the ``default`` team (off), with the session's CSRF token for the page's script."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from service.api.auth import ANONYMOUS, SESSION_COOKIE, Principal, csrf_token
from service.api.deps import AppContext


@dataclass(frozen=True, kw_only=True)
class Viewer:
    principal: Principal
    csrf: str  # empty with authentication off
    signed_in: bool

    @property
    def team_id(self) -> str:
        return self.principal.team_id


async def viewer_of(request: Request, ctx: AppContext) -> Viewer | None:
    """The viewer, or ``None`` when authentication is on and no live session is presented."""
    if not ctx.settings.auth_enabled:
        return Viewer(principal=ANONYMOUS, csrf="", signed_in=False)
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    owner = await run_in_threadpool(ctx.sessions.owner, token)
    if owner is None:
        return None
    return Viewer(principal=Principal(team_id=owner.team_id, key_id=owner.key_id),
                  csrf=csrf_token(token), signed_in=True)


def sign_in_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a portal path only (never another site)."""
    if target and target.startswith("/ui/") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return "/ui/"
