"""Jobs as a tenant sees them: each call takes the request's session and flushes, never commits.

Creating, starting and cancelling go through verisolve.pipeline.jobs, the path every front end
takes; starting enqueues the generate steps through the outbox, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.submission.schemas import JobCreate
from verisolve.executors.outbox import enqueue_many
from verisolve.pipeline.jobs import JobError, JobSpec, cancel_job, create_job, start_job
from verisolve.pipeline.stages import NextStep
from verisolve.tables import Job, JobStatus

ENQUEUE_BATCH = 2000  # outbox rows per INSERT: well under the drivers' bind-parameter limits


class JobNotFoundError(LookupError):
    """No such job for this tenant (another tenant's job is not found either)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job {job_id}")


class JobParametersError(ValueError):
    """Job parameters that the pipeline refuses (such as a strategy that needs a verifier)."""


def owned_job(session: Session, tenant: str, job_id: int, *, lock: bool = False) -> Job:
    """The tenant's job, locked for update when asked; raises JobNotFoundError."""
    query = sa.select(Job).where(Job.id == job_id, Job.owner == tenant)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    job = session.scalars(query).first()
    if job is None:
        raise JobNotFoundError(job_id)
    return job


def spec_of(tenant: str, body: JobCreate, default_generator: str) -> JobSpec:
    """The pipeline's form of a request's parameters."""
    return JobSpec(
        generator=body.generator or default_generator,
        verifier=body.verifier,
        n_samples=body.n_samples,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        max_new_tokens=body.max_new_tokens,
        seed=body.seed,
        strategy=body.strategy.value if body.strategy else None,
        vote_k=body.vote_k,
        owner=tenant,
        name=body.name,
    )


def create(
    session: Session, tenant: str, body: JobCreate, default_generator: str
) -> tuple[Job, bool]:
    """A new pending job, or the one made with the same idempotency key; (job, created)."""
    spec = spec_of(tenant, body, default_generator)
    try:
        spec.validate()
    except JobError as exc:
        raise JobParametersError(str(exc)) from None
    if body.idempotency_key:
        existing = _job_by_key(session, tenant, body.idempotency_key)
        if existing is not None:
            _check_same_parameters(existing, spec)
            return existing, False
    job = create_job(session, spec)
    # The key goes where `verisolve solve` keeps its digest of parameters and problems.
    job.fingerprint = body.idempotency_key
    session.flush()
    return job, True


def _job_by_key(session: Session, tenant: str, key: str) -> Job | None:
    return session.scalars(
        sa.select(Job)
        .where(Job.owner == tenant, Job.fingerprint == key, Job.status != JobStatus.CANCELLED)
        .order_by(Job.id.desc())
        .limit(1)
    ).first()


def _check_same_parameters(job: Job, spec: JobSpec) -> None:
    fields = (
        *("generator", "verifier", "n_samples", "temperature", "top_p", "top_k"),
        *("max_new_tokens", "seed", "vote_k", "name"),
    )
    for name in fields:
        if getattr(job, name) != getattr(spec, name):
            raise JobError(f"the idempotency key was used for job {job.id}, whose {name} differs")
    if job.strategy != spec.resolved_strategy().value:
        raise JobError(f"the idempotency key was used for job {job.id}, whose strategy differs")


def start(session: Session, tenant: str, job_id: int) -> Job:
    """Start a job: mark it running and enqueue its waiting problems (again is a no-op)."""
    job = owned_job(session, tenant, job_id, lock=True)
    problem_ids = start_job(session, job)
    for i in range(0, len(problem_ids), ENQUEUE_BATCH):
        batch: Sequence[int] = problem_ids[i : i + ENQUEUE_BATCH]
        enqueue_many(session, [NextStep("generate", pid) for pid in batch])
    return job


def cancel(session: Session, tenant: str, job_id: int) -> Job:
    """Cancel a job that has not finished (a cancelled one stays so); JobError for a done job."""
    job = owned_job(session, tenant, job_id, lock=True)
    if not cancel_job(session, job) and job.status != JobStatus.CANCELLED:
        raise JobError(f"job {job.id} is {job.status}; there is nothing to cancel")
    return job


def list_jobs(
    session: Session, tenant: str, *, limit: int, before: int | None, status: JobStatus | None
) -> list[Job]:
    """The tenant's jobs, newest first, older than `before` when given."""
    query = sa.select(Job).where(Job.owner == tenant).order_by(Job.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Job.id < before)
    if status is not None:
        query = query.where(Job.status == status.value)
    return list(session.scalars(query))
