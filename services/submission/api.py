"""The submission service's FastAPI app: `create_app()` builds it; `verisolve api` serves it."""

from __future__ import annotations

import re
from collections.abc import Mapping

import sqlalchemy as sa
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from services.submission.deps import EngineDep
from services.submission.endpoints import router
from services.submission.ingest import ChunkRejectedError
from services.submission.limits import BodyLimitMiddleware
from services.submission.openapi import live_openapi
from services.submission.schemas import ErrorBody, ErrorItem, Health, Readiness
from verisolve import __version__
from verisolve.db import get_engine
from verisolve.db.migrate import current_revision, head_revision
from verisolve.pipeline.jobs import JobError, JobInvalid, JobNotFound
from verisolve.settings import Settings, get_settings


def create_app(engine: sa.Engine | None = None, settings: Settings | None = None) -> FastAPI:
    """The app, on the given engine and settings (the configured ones by default)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="verisolve submission service",
        version=__version__,
        summary="Submit math word problems in bulk; read back answers and candidates.",
    )
    app.state.settings = settings
    app.state.engine = engine or get_engine(settings.database_url)
    app.state.code_revision = head_revision()
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    _add_error_handlers(app)
    app.include_router(router)
    app.openapi = lambda: live_openapi(app, app.state.engine, settings)  # type: ignore[method-assign]
    app.get("/healthz", tags=["health"])(healthz)
    app.get(
        "/readyz",
        tags=["health"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready."}},
    )(readyz)
    return app


def healthz() -> Health:
    """The process answers (liveness)."""
    return Health(status="ok")


def readyz(request: Request, engine: EngineDep) -> Readiness | JSONResponse:
    """The database answers and its schema is at the code's newest revision (readiness)."""
    code = request.app.state.code_revision
    try:
        database = current_revision(engine)
    except sa.exc.SQLAlchemyError as exc:
        return _unready(None, code, f"database unreachable: {type(exc).__name__}")
    if database != code:
        return _unready(
            database, code, "the schema is not at the newest revision: run `verisolve db upgrade`"
        )
    return Readiness(status="ready", database_revision=database, code_revision=code)


def _unready(database: str | None, code: str | None, detail: str) -> JSONResponse:
    body = Readiness(
        status="unavailable", database_revision=database, code_revision=code, detail=detail
    )
    return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


def _error(
    status_code: int, body: ErrorBody, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the schema gives this path (Starlette names only the first route's)."""
    path = request.url.path
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answers with an ErrorBody."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            headers["Allow"] = ", ".join(allowed_methods(request))
        if exc.status_code == status.HTTP_400_BAD_REQUEST:  # a body FastAPI could not parse
            item = ErrorItem(line=None, field="body", reason="not a JSON document")
            body = ErrorBody(detail="body: not a JSON document", errors=[item], n_errors=1)
            return _error(422, body)
        return _error(exc.status_code, ErrorBody(detail=str(exc.detail)), headers)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        items = [
            ErrorItem(line=None, field=".".join(str(p) for p in e["loc"]), reason=e["msg"])
            for e in exc.errors()
        ]
        detail = "; ".join(f"{i.field}: {i.reason}" for i in items[:3])
        return _error(422, ErrorBody(detail=detail, errors=items, n_errors=len(items)))

    async def bad_chunk(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ChunkRejectedError)
        items = [ErrorItem(line=e.line_no, field=e.field, reason=e.reason) for e in exc.errors]
        return _error(422, ErrorBody(detail=str(exc), errors=items, n_errors=exc.n_errors))

    async def job_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, JobError)
        if isinstance(exc, JobInvalid):
            item = ErrorItem(line=None, field=exc.field, reason=str(exc))
            return _error(422, ErrorBody(detail=f"{exc.field}: {exc}", errors=[item], n_errors=1))
        return _error(404 if isinstance(exc, JobNotFound) else 409, ErrorBody(detail=str(exc)))

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ChunkRejectedError, bad_chunk)

    async def write_conflict(_: Request, exc: Exception) -> JSONResponse:
        # Uploads and creates take turns on the job's row, so this is a belt, never the path:
        # a concurrent write won a unique key; nothing of this request was stored.
        detail = "a concurrent request wrote the same rows first; nothing was stored, retry"
        return _error(409, ErrorBody(detail=detail))

    app.add_exception_handler(JobError, job_error)
    app.add_exception_handler(sa.exc.IntegrityError, write_conflict)
