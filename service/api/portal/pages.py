"""The portal's pages: the job list (and its rows, for live updates), a job, the submission
form, the comparison of jobs, and signing in and out."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from service.api.auth import SESSION_COOKIE, enforce_rate_limit
from service.api.deps import CtxDep
from service.api.portal.chart import chart
from service.api.portal.form import form_fields
from service.api.portal.viewer import Viewer, safe_next, sign_in_redirect, viewer_of
from service.api.portal.views import ACTIVE, JobView, fmt_bytes, fmt_time, job_view
from service.api.routers.jobs import _decode_cursor, _encode_cursor
from service.api.routers.quantizers import describe
from service.api.schemas import LABEL_KEY_PATTERN
from service.errors import BadRequestError
from service.store.records import JobRecord

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(when=fmt_time, size=fmt_bytes)

router = APIRouter(prefix="/ui", include_in_schema=False)

PAGE_SIZE = 25
MAX_COMPARED = 8
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
KINDS = ("quantize", "sweep", "search")
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'; "
          "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


def page(request: Request, name: str, viewer: Viewer | None, status_code: int = 200,
         **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, name, {"viewer": viewer, **context}, status_code=status_code,
        headers=SECURITY_HEADERS,
    )
    return response


def not_found(request: Request, viewer: Viewer, what: str) -> HTMLResponse:
    return page(request, "message.html", viewer, status_code=404, title="Not found",
                message=f"No {what} here for your team.")


def _filters(status: str | None, kind: str | None, label: str | None,
             q: str | None) -> tuple[dict[str, str], list[str]]:
    """The list's filters that apply, and what was refused in them."""
    applied: dict[str, str] = {}
    problems = []
    if status in STATUSES:
        applied["status"] = status
    if kind in KINDS:
        applied["kind"] = kind
    if label:
        key, _, value = label.strip().partition("=")
        if re.match(LABEL_KEY_PATTERN, key) and len(value) <= 200:
            applied["label"] = label.strip()
        else:
            problems.append(f"The label filter {label!r} is not key or key=value.")
    if q and q.strip():
        applied["q"] = q.strip()[:200]
    return applied, problems


def _rows(ctx: CtxDep, viewer: Viewer, applied: dict[str, str],
          cursor: str | None) -> tuple[list[JobView], int, str | None]:
    after = None
    if cursor:
        try:
            after = _decode_cursor(cursor)
        except BadRequestError:
            after = None
    labels: list[tuple[str, str | None]] = []
    if "label" in applied:
        key, has_value, value = applied["label"].partition("=")
        labels.append((key, value if has_value else None))
    found = ctx.jobs.page(team_id=viewer.team_id, status=applied.get("status"),
                          kind=applied.get("kind"), labels=labels, text=applied.get("q"),
                          limit=PAGE_SIZE, after=after)
    names = ctx.uploads.model_names({j.model_id for j in found.jobs}, team_id=viewer.team_id)
    views = [job_view(j, names.get(j.model_id, "")) for j in found.jobs]
    more = _encode_cursor(found.jobs[-1]) if found.more else None
    return views, found.count, more


Text = Annotated[str | None, Query(max_length=300)]


@router.get("", response_class=RedirectResponse)
def portal_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/", response_class=HTMLResponse)
async def job_list(request: Request, ctx: CtxDep, status: Text = None, kind: Text = None,
                   label: Text = None, q: Text = None, cursor: Text = None) -> Response:
    viewer = await viewer_of(request, ctx)
    if viewer is None:
        return sign_in_redirect(request)
    applied, problems = _filters(status, kind, label, q)
    views, count, more = await run_in_threadpool(_rows, ctx, viewer, applied, cursor)
    query = urlencode(applied)
    return page(request, "jobs.html", viewer, views=views, count=count, next_cursor=more,
                cursor=cursor, applied=applied, problems=problems, statuses=STATUSES,
                kinds=KINDS, query=query, active=any(v.active for v in views))


@router.get("/rows", response_class=HTMLResponse)
async def job_rows(request: Request, ctx: CtxDep, status: Text = None, kind: Text = None,
                   label: Text = None, q: Text = None, cursor: Text = None) -> Response:
    """The list's rows alone: the list page's script reloads them while jobs are active."""
    viewer = await viewer_of(request, ctx)
    if viewer is None:
        return Response(status_code=401)
    applied, _ = _filters(status, kind, label, q)
    views, _, _ = await run_in_threadpool(_rows, ctx, viewer, applied, cursor)
    return page(request, "rows.html", viewer, views=views,
                active=any(v.active for v in views))


def _job(ctx: CtxDep, viewer: Viewer, job_id: str) -> tuple[JobView, list[Any]] | None:
    job = ctx.jobs.get(job_id[:64], team_id=viewer.team_id)
    if job is None:
        return None
    names = ctx.uploads.model_names([job.model_id], team_id=viewer.team_id)
    return job_view(job, names.get(job.model_id, "")), ctx.jobs.artifacts(job.id)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str, ctx: CtxDep) -> Response:
    viewer = await viewer_of(request, ctx)
    if viewer is None:
        return sign_in_redirect(request)
    found = await run_in_threadpool(_job, ctx, viewer, job_id)
    if found is None:
        return not_found(request, viewer, "job")
    view, artifacts = found
    return page(request, "job.html", viewer, view=view, job=view.job, artifacts=artifacts,
                active=view.job.status in ACTIVE,
                spec_json=json.dumps(view.job.spec, indent=2))


def _prefill(job: JobRecord | None) -> dict[str, Any]:
    if job is None:
        return {}
    spec = job.spec or {}
    base = spec.get("base", spec) if job.kind != "quantize" else spec
    return {"kind": job.kind, "name": job.name or "", "labels": job.labels or {},
            "spec": base, "grid": spec.get("grid") or spec.get("candidates") or {},
            "max_top1_drop": spec.get("max_top1_drop"),
            "mixed_precision": spec.get("mixed_precision"), "model_id": job.model_id,
            "dataset_id": job.dataset_id, "job_id": job.id}


@router.get("/new", response_class=HTMLResponse)
async def new_job(request: Request, ctx: CtxDep,
                  from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
                  ) -> Response:
    viewer = await viewer_of(request, ctx)
    if viewer is None:
        return sign_in_redirect(request)
    source = None
    model_name = ""
    if from_:
        source = await run_in_threadpool(ctx.jobs.get, from_, team_id=viewer.team_id)
        if source is None:
            return not_found(request, viewer, "job to run again")
        names = await run_in_threadpool(ctx.uploads.model_names, [source.model_id],
                                        team_id=viewer.team_id)
        model_name = names.get(source.model_id, source.model_id)
    catalogue = describe()
    prefill = _prefill(source)
    grid = prefill.get("grid", {})
    return page(request, "new.html", viewer, kinds=KINDS, prefill=prefill,
                fields=form_fields(catalogue, prefill.get("spec", {})),
                methods=[m.name for m in catalogue.methods],
                granularities=next(p.choices for p in catalogue.parameters
                                   if p.name == "granularity") or [],
                grid_bits=", ".join(str(b) for b in grid.get("bits", [])),
                grid_methods=grid.get("method", []),
                grid_granularities=grid.get("granularity", []),
                labels_text=", ".join(f"{k}={v}" for k, v in prefill.get("labels", {}).items()),
                source=source, model_name=model_name)


@router.get("/compare", response_class=HTMLResponse)
async def compare(request: Request, ctx: CtxDep,
                  id: Annotated[list[str] | None, Query(max_length=MAX_COMPARED)] = None,
                  ) -> Response:
    viewer = await viewer_of(request, ctx)
    if viewer is None:
        return sign_in_redirect(request)
    ids = list(dict.fromkeys(i[:64] for i in id or []))

    def load() -> tuple[list[JobView], list[str]]:
        jobs = [(i, ctx.jobs.get(i, team_id=viewer.team_id)) for i in ids]
        found = [j for _, j in jobs if j is not None]
        names = ctx.uploads.model_names({j.model_id for j in found}, team_id=viewer.team_id)
        return ([job_view(j, names.get(j.model_id, "")) for j in found],
                [i for i, j in jobs if j is None])

    views, missing = await run_in_threadpool(load)
    figures = []
    if views:
        figures = [
            chart(views, lambda p: p.sqnr_db, "SQNR (dB)",
                  "Weight SQNR against entropy bits per weight"),
            chart(views, lambda p: None if p.top1 is None else 100 * p.top1,
                  "top-1 (%)", "Top-1 accuracy against entropy bits per weight"),
        ]
    return page(request, "compare.html", viewer, views=views, missing=missing,
                figures=figures, too_few=len(views) < 2)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, ctx: CtxDep, next: Text = None) -> Response:
    if not ctx.settings.auth_enabled:
        return RedirectResponse("/ui/", status_code=303)
    return page(request, "login.html", None, next=safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, ctx: CtxDep) -> Response:
    if not ctx.settings.auth_enabled:
        return RedirectResponse("/ui/", status_code=303)
    host = request.client.host if request.client else "-"
    await run_in_threadpool(enforce_rate_limit, ctx.limiter, f"login:{host}")
    form = await request.form(max_files=0, max_fields=4)
    key = str(form.get("api_key") or "").strip()
    target = safe_next(str(form.get("next") or ""))
    owner = await run_in_threadpool(ctx.authenticator.keys.owner, key) if key else None
    if owner is None or owner.revoked:
        return page(request, "login.html", None, status_code=401, next=target,
                    error="That API key is not valid (unknown or revoked).")
    ttl = ctx.settings.session_ttl_hours * 3600
    token = await run_in_threadpool(lambda: ctx.sessions.start(
        key_id=owner.key_id, team_id=owner.team_id, ttl_s=ttl))
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(ttl), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


@router.post("/logout")
async def logout(request: Request, ctx: CtxDep) -> Response:
    viewer = await viewer_of(request, ctx)
    form = await request.form(max_files=0, max_fields=4)
    token = request.cookies.get(SESSION_COOKIE)
    if viewer is not None and token and form.get("csrf_token") == viewer.csrf:
        await run_in_threadpool(ctx.sessions.end, token)
    response = RedirectResponse("/ui/login" if ctx.settings.auth_enabled else "/ui/",
                                status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
