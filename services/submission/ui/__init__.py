"""The job inspector: read-only HTML pages at /ui, served by the submission service's app."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from services.submission.ui.pages import HERE, router, templates
from services.submission.ui.queries import NotFoundError
from services.submission.ui.session import SignInRequiredError, make_config

Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def mount_ui(app: FastAPI, secret: str | None, local_tenant: str | None = None) -> None:
    """Serve the inspector on `app`; with `local_tenant`, every visitor is that tenant."""
    app.state.ui_config = make_config(secret, local_tenant)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    async def sign_in(request: Request, _: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target, safe='/')}", status_code=303)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_page(request, 404, "Not found", str(exc))

    app.add_exception_handler(SignInRequiredError, sign_in)
    app.add_exception_handler(NotFoundError, not_found)
    # Errors the API answers in JSON become pages under /ui; elsewhere nothing changes.
    for kind in (HTTPException, RequestValidationError):
        app.add_exception_handler(kind, _html_under_ui(app.exception_handlers.get(kind)))


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    """The inspector's error page."""
    local = request.app.state.ui_config.local_tenant is not None
    context = {"title": title, "message": message.rstrip("."), "local": local}
    return templates.TemplateResponse(request, "error.html", context, status_code=status_code)


def _html_under_ui(fallback: Handler | None) -> Handler:
    async def handle(request: Request, exc: Any) -> Response:
        if request.url.path.startswith("/ui/") or fallback is None:
            if isinstance(exc, HTTPException):
                title = "Not found" if exc.status_code == 404 else f"Error {exc.status_code}"
                return error_page(request, exc.status_code, title, str(exc.detail))
            return error_page(request, 422, "Bad request", _first_error(exc))
        answer = fallback(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    return handle


def _first_error(exc: Exception) -> str:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    if not errors:
        return str(exc)
    first = errors[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


__all__ = ["error_page", "mount_ui"]
