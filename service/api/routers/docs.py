"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from files served by the service itself.

FastAPI's own pages load their scripts from a CDN; these load the copies shipped in the
``fastapi-offline`` package, under ``/docs-assets/``, so the pages work without reaching
anything outside the service, and a content policy holds them to the service's origin.
ReDoc's script draws its maker's logo from its maker's CDN: the copy served here points that
image at the local favicon instead.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Response
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
router = APIRouter(include_in_schema=False)

POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
          "'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
          "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'")
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _held(page: HTMLResponse) -> HTMLResponse:
    return HTMLResponse(bytes(page.body), headers={"Content-Security-Policy": POLICY,
                                                   "X-Content-Type-Options": "nosniff"})


@lru_cache(maxsize=1)
def _redoc_script() -> bytes:
    text = (assets_dir() / "redoc.standalone.js").read_text(encoding="utf-8")
    return text.replace(REDOC_LOGO, f"{ASSETS_PATH}/favicon.png").encode()


@router.get(f"{ASSETS_PATH}/redoc.standalone.js")
def redoc_script() -> Response:
    return Response(_redoc_script(), media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": "public, max-age=86400"})


def assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return _held(get_swagger_ui_html(
        openapi_url="/openapi.json", title="quantserve API",
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},
    ))


@router.get("/docs/oauth2-redirect")
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc() -> HTMLResponse:
    return _held(get_redoc_html(
        openapi_url="/openapi.json", title="quantserve API",
        redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PATH}/favicon.png", with_google_fonts=False,
    ))


def install_docs(app: FastAPI) -> None:
    """The two pages and their assets (the app is made with ``docs_url=None``)."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
