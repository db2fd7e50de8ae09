"""The job inspector: read-only HTML pages at /ui, served by the submission service's app."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from services.submission.ui.pages import HERE, router, templates
from services.submission.ui.queries import NotFoundError
from services.submission.ui.session import SignInRequiredError, make_config


def mount_ui(app: FastAPI, secret: str | None, local_tenant: str | None = None) -> None:
    """Serve the inspector on `app`; with `local_tenant`, every visitor is that tenant."""
    app.state.ui_config = make_config(secret, local_tenant)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    async def sign_in(request: Request, _: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={_quote(target)}", status_code=303)

    async def not_found(request: Request, exc: Exception) -> Response:
        context = {"message": str(exc), "local": local_tenant is not None}
        return templates.TemplateResponse(request, "not_found.html", context, status_code=404)

    app.add_exception_handler(SignInRequiredError, sign_in)
    app.add_exception_handler(NotFoundError, not_found)


def _quote(path: str) -> str:
    return quote(path, safe="/")


__all__ = ["mount_ui"]
