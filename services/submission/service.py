"""Jobs as a tenant sees them: each call takes the request's session and flushes, never commits.

Every step of a job's life goes through verisolve.pipeline.jobs, the path every front end takes;
this module only maps a request onto it, within the tenant's own jobs.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.submission.schemas import JobCreate
from verisolve.pipeline import jobs
from verisolve.pipeline.jobs import JobSpec
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.spec import sampling_from
from verisolve.tables import Job, JobStatus


def spec_of(tenant: str, body: JobCreate, default_generator: str) -> JobSpec:
    """The pipeline's form of a request's parameters."""
    return JobSpec(
        generator=body.generator or default_generator,
        verifier=body.verifier,
        sampling=sampling_from(body.model_dump()),
        strategy=body.strategy.value if body.strategy else None,
        vote_k=body.vote_k,
        owner=tenant,
        name=body.name,
    )


def create(
    session: Session, tenant: str, body: JobCreate, default_generator: str, limits: JobLimits
) -> tuple[Job, bool]:
    """A new pending job, or the one made with the same idempotency key; (job, created)."""
    spec = spec_of(tenant, body, default_generator)
    return jobs.create_job(session, spec, limits=limits, idempotency_key=body.idempotency_key)


def owned_job(session: Session, tenant: str, job_id: int) -> Job:
    """The tenant's job; JobNotFound for another tenant's job too."""
    return jobs.get_job(session, job_id, owner=tenant)


def start(session: Session, tenant: str, job_id: int) -> Job:
    """Start a job: mark it running and enqueue its waiting problems (again is a no-op)."""
    job = jobs.lock_job(session, job_id, owner=tenant)
    jobs.start_job(session, job)
    return job


def cancel(session: Session, tenant: str, job_id: int) -> Job:
    """Cancel a job that has not finished (a cancelled one stays so); JobConflict for a done job."""
    job = jobs.lock_job(session, job_id, owner=tenant)
    jobs.cancel_job(session, job)
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
