"""The team portal at ``/ui/``: pages rendered on the server with Jinja2, a small script of
its own (``static/portal.js``, no library) and a style sheet, all served by the service.

Reads happen on the server through the store, scoped to the viewer's team; everything that
changes something (upload, submit, cancel, delete) is done by the page's script through the
public API (``/v1``), signed in by the session cookie and the page's CSRF token when
authentication is on. Every page answers with a content policy that loads nothing from
outside the service and runs only the portal's own script.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.api.portal.pages import STATIC_DIR, router


def install_portal(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="portal-static")


__all__ = ["install_portal"]
