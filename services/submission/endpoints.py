"""The /v1/jobs endpoints: thin adapters from HTTP to the service functions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from services.submission import ingest, service
from services.submission.auth import TenantDep
from services.submission.deps import EngineDep, SessionDep, SettingsDep, known_query
from services.submission.schemas import (
    MAX_INT32,
    NDJSON,
    ErrorBody,
    JobCreate,
    JobDetail,
    JobOut,
    JobPage,
    ProblemLine,
    Progress,
    UploadResult,
)
from verisolve.db import session_scope
from verisolve.pipeline.job_rows import candidate_rows, ndjson_lines, problem_counts
from verisolve.pipeline.jobs import check_pending, lock_job
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.results import answer_rows
from verisolve.problems import Limits
from verisolve.tables import Job, JobStatus

STREAM_BYTES = 256 * 1024  # bytes gathered before a write, so a big stream is few writes

Responses = dict[int | str, dict[str, Any]]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    dependencies=[Depends(known_query)],
    responses={
        401: _error("No API key, or not a valid one."),
        422: _error(
            "Bad parameters or body, an unknown model, or a limit passed; `errors` names each."
        ),
    },
)
JobId = Annotated[int, Path(ge=1, le=MAX_INT32, description="The job's id.")]
NOT_FOUND: Responses = {404: _error("No such job for this tenant.")}
CONFLICT: Responses = {409: _error("The job's state (or idempotency key) does not allow it.")}
TOO_LARGE: Responses = {413: _error("The body is over the service's limit.")}
UPLOAD_BODY: dict[str, Any] = {
    "content": {
        NDJSON: {
            "schema": {"type": "array", "minItems": 1, "items": ProblemLine.model_json_schema()}
        }
    },
    "description": (
        "One problem per line (JSON Lines), at least one; line numbers start at line_offset + 1. "
        "Ids are unique in a job; an answer string is a number or a solution ending in '#### N'."
    ),
}
# A streaming route's errors are JSON: given with a model, FastAPI would document them as NDJSON.
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
STREAM_RESPONSES: Responses = {
    200: {"description": "JSON lines.", "content": {NDJSON: {"schema": {"type": "string"}}}},
    **{
        code: {"description": entry["description"], "content": _JSON_ERROR}
        for code, entry in {**router.responses, **NOT_FOUND}.items()
    },
}


class NdjsonResponse(StreamingResponse):
    """A stream of JSON lines."""

    media_type = NDJSON


@router.post(
    "", status_code=status.HTTP_201_CREATED, responses={200: {"model": JobOut}, **CONFLICT}
)
def create_job(
    body: JobCreate,
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
) -> JobOut:
    """Create a pending job; 200 and the same job for an idempotency key used before.

    The generator and verifier must be registered model names, and the job within the limits.
    """
    limits = JobLimits.from_settings(settings)
    job, created = service.create(session, tenant, body, settings.default_generator, limits)
    if not created:
        response.status_code = status.HTTP_200_OK
    return JobOut.model_validate(job)


@router.get("")
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_INT32, description="Older than this id.")
    ] = None,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
) -> JobPage:
    """The tenant's jobs, newest first."""
    jobs = service.list_jobs(session, tenant, limit=limit, before=before, status=job_status)
    next_before = jobs[-1].id if len(jobs) == limit else None
    return JobPage(jobs=[JobOut.model_validate(j) for j in jobs], next_before=next_before)


@router.get("/{job_id}", responses=NOT_FOUND)
def get_job(job_id: JobId, session: SessionDep, tenant: TenantDep) -> JobDetail:
    """A job with its progress (problems per stage) and, once done, its metrics."""
    job = service.owned_job(session, tenant, job_id)
    progress = Progress(**problem_counts(session, job.id))
    return JobDetail(
        **JobOut.model_validate(job).model_dump(), progress=progress, metrics=job.metrics
    )


async def _body(request: Request) -> bytes:
    return await request.body()


@router.post(
    "/{job_id}/problems",
    openapi_extra={"requestBody": {"required": True, **UPLOAD_BODY}},
    responses={**NOT_FOUND, **CONFLICT, **TOO_LARGE},
)
def upload_problems(
    job_id: JobId,
    session: SessionDep,
    tenant: TenantDep,  # before the body: no key, no body read
    body: Annotated[bytes, Depends(_body)],
    settings: SettingsDep,
    line_offset: Annotated[
        int, Query(ge=0, le=2_000_000_000, description="Lines of the file before this chunk.")
    ] = 0,
    dry_run: Annotated[bool, Query(description="Validate only; store nothing.")] = False,
) -> UploadResult:
    """Add a chunk of problems (NDJSON) to a pending job; a chunk with a bad line adds none."""
    check_pending(service.owned_job(session, tenant, job_id))  # before the parsing
    limits = Limits(settings.max_question_chars, settings.max_line_bytes)
    problems = ingest.parse_chunk(body, line_offset, limits)
    # Uploads to one job take turns from here: each sees what the one before it stored.
    job = lock_job(session, job_id, owner=tenant)
    stored = ingest.store_chunk(
        session, job, problems, JobLimits.from_settings(settings), dry_run=dry_run
    )
    return UploadResult(
        received=stored.received,
        stored=stored.stored,
        skipped=stored.skipped,
        n_problems=job.n_problems,
        dry_run=dry_run,
    )


@router.post("/{job_id}/start", responses={**NOT_FOUND, **CONFLICT})
def start_job(job_id: JobId, session: SessionDep, tenant: TenantDep) -> JobOut:
    """Start a job: its problems go to the generator workers. Starting again is harmless."""
    return JobOut.model_validate(service.start(session, tenant, job_id))


@router.post("/{job_id}/cancel", responses={**NOT_FOUND, **CONFLICT})
def cancel_job(job_id: JobId, session: SessionDep, tenant: TenantDep) -> JobOut:
    """Cancel a job that has not finished; workers skip its remaining problems."""
    return JobOut.model_validate(service.cancel(session, tenant, job_id))


def _stream(rows: Iterable[bytes]) -> Iterator[bytes]:
    buffer = bytearray()
    for line in rows:
        buffer += line
        if len(buffer) >= STREAM_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _answers(engine: sa.Engine, job_id: int) -> Iterator[bytes]:
    # Its own session: the request's is closed before the body is sent.
    with session_scope(engine) as session:
        yield from _stream(ndjson_lines(answer_rows(session, session.get_one(Job, job_id))))


def _candidates(engine: sa.Engine, job_id: int) -> Iterator[bytes]:
    with session_scope(engine) as session:
        yield from _stream(ndjson_lines(candidate_rows(session, job_id)))


@router.get("/{job_id}/answers", response_class=NdjsonResponse, responses=STREAM_RESPONSES)
def answers(
    job_id: JobId, session: SessionDep, tenant: TenantDep, engine: EngineDep
) -> NdjsonResponse:
    """One JSON line per problem, in upload order: its answer (null until it is done)."""
    service.owned_job(session, tenant, job_id)
    return NdjsonResponse(_answers(engine, job_id))


@router.get("/{job_id}/candidates", response_class=NdjsonResponse, responses=STREAM_RESPONSES)
def candidates(
    job_id: JobId, session: SessionDep, tenant: TenantDep, engine: EngineDep
) -> NdjsonResponse:
    """One JSON line per candidate solution, by problem and sample index."""
    service.owned_job(session, tenant, job_id)
    return NdjsonResponse(_candidates(engine, job_id))
