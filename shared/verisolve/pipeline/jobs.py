"""A job's lifecycle in one place: create, check, add problems, start and enqueue, resume, cancel.

Every front end (the CLI, the API, the inline executor) goes through these functions. They take
a session and flush; the caller's session scope commits. Every refusal is a JobError: JobNotFound,
JobConflict (the job's state, or an idempotency key used with other parameters) or JobInvalid
(a parameter, naming it), which the CLI prints as one line and the API answers with 404/409/422.
Counters are updated by the database (`n = n + k`), never read, added to and written back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from verisolve.db.base import utcnow
from verisolve.modelstore.registry import NAME_RULE, is_model_name
from verisolve.pipeline.errors import JobConflict, JobError, JobInvalid, JobNotFound
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.outbox import enqueue_many
from verisolve.pipeline.routes import STAGE_OF, step_for
from verisolve.pipeline.spec import JobSpec
from verisolve.pipeline.stages import NextStep
from verisolve.problems import ProblemIn
from verisolve.tables import Job, JobStatus, ModelArtifact, Problem, ProblemStatus

__all__ = ["JobConflict", "JobError", "JobInvalid", "JobNotFound", "JobSpec"]

ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING)


def check_models(session: Session, spec: JobSpec) -> None:
    """JobInvalid unless each model is a registered name of the right kind."""
    for kind, name in (("generator", spec.generator), ("verifier", spec.verifier)):
        if name is None:
            continue
        if not is_model_name(name):
            raise JobInvalid(kind, f"{name!r} is not a model name ({NAME_RULE})")
        row_kind = session.scalar(sa.select(ModelArtifact.kind).where(ModelArtifact.name == name))
        if row_kind != kind:
            raise JobInvalid(kind, f"no {kind} {name!r} is registered")


def check_spec(session: Session, spec: JobSpec, limits: JobLimits) -> None:
    """JobInvalid naming the first bad parameter, model or limit of a new job."""
    spec.validate()
    limits.check_sampling(spec.sampling)
    check_models(session, spec)
    active = session.scalar(
        sa.select(sa.func.count()).where(Job.owner == spec.owner, Job.status.in_(ACTIVE))
    )
    limits.check_active_jobs(int(active or 0))


def create_job(
    session: Session,
    spec: JobSpec,
    problems: Sequence[ProblemIn] = (),
    *,
    limits: JobLimits,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """A new pending job with its problems, or the tenant's job with this key; (job, created)."""
    _lock_tenant(session, spec.owner)
    if idempotency_key is not None:
        existing = _job_by_key(session, spec.owner, idempotency_key)
        if existing is not None:
            return _same_parameters(existing, spec), False
    check_spec(session, spec, limits)
    values = {
        **spec.columns(),
        "status": JobStatus.PENDING,
        "fingerprint": _fingerprint(session, spec, problems) if problems else None,
        "idempotency_key": idempotency_key,
    }
    job_id = session.scalar(_insert(session).values(**values).returning(Job.id))
    if job_id is None:  # another request with the same key committed first: its job answers
        assert idempotency_key is not None
        winner = _job_by_key(session, spec.owner, idempotency_key)
        assert winner is not None
        return _same_parameters(winner, spec), False
    job = session.get_one(Job, job_id)
    add_problems(session, job, problems, limits)
    return job, True


def _lock_tenant(session: Session, owner: str) -> None:
    """Make one tenant's job creations take turns, so its key and its job count hold exactly.

    PostgreSQL: a transaction-scoped advisory lock on the tenant. SQLite: a write that changes
    nothing still takes the database's write lock, and everything read after it is the latest.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = sa.func.hashtextextended(f"verisolve.jobs:{owner}", 0)
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
    else:
        session.execute(sa.update(Job).where(sa.false()).values(n_problems=Job.n_problems))


def _insert(session: Session) -> Any:
    """An INSERT into jobs that does nothing when the (owner, key) is taken."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert(Job) if dialect == "postgresql" else sqlite.insert(Job)
    return insert.on_conflict_do_nothing(index_elements=[Job.owner, Job.idempotency_key])


def _job_by_key(session: Session, owner: str, key: str) -> Job | None:
    query = sa.select(Job).where(Job.owner == owner, Job.idempotency_key == key)
    return session.scalars(query.execution_options(populate_existing=True)).first()


def _same_parameters(job: Job, spec: JobSpec) -> Job:
    """The job, unless its parameters differ from the spec's (JobConflict, naming the first)."""
    wanted = spec.columns()
    held = JobSpec.of_job(job).columns()
    for name, value in wanted.items():
        if held[name] != value:
            raise JobConflict(
                f"the idempotency key was used for job {job.id}, whose {name} differs"
            )
    return job


def get_job(session: Session, job_id: int, *, owner: str | None = None) -> Job:
    """The job (the owner's only, when given); JobNotFound otherwise."""
    query = sa.select(Job).where(Job.id == job_id)
    if owner is not None:
        query = query.where(Job.owner == owner)
    job = session.scalars(query).first()
    if job is None:
        raise JobNotFound(job_id)
    return job


def lock_job(session: Session, job_id: int, *, owner: str | None = None) -> Job:
    """The job, write-locked until commit: writers of the same job (uploads, starts) take turns.

    A no-op UPDATE rather than SELECT ... FOR UPDATE: it locks the row on PostgreSQL and takes the
    write lock on SQLite, where FOR UPDATE does nothing, so what is read next is the latest.
    """
    query = sa.update(Job).where(Job.id == job_id).values(n_problems=Job.n_problems)
    if owner is not None:
        query = query.where(Job.owner == owner)
    session.execute(query.execution_options(synchronize_session=False))
    job = session.scalars(
        sa.select(Job)
        .where(Job.id == job_id, *([Job.owner == owner] if owner is not None else []))
        .execution_options(populate_existing=True)
    ).first()
    if job is None:
        raise JobNotFound(job_id)
    return job


def check_pending(job: Job) -> None:
    """JobConflict unless the job still takes problems."""
    if job.status != JobStatus.PENDING:
        raise JobConflict(f"job {job.id} is {job.status}: problems can only be added while pending")


def add_problems(
    session: Session, job: Job, problems: Iterable[ProblemIn], limits: JobLimits
) -> int:
    """Insert the problems a job does not hold yet (by external id); returns how many were new.

    The caller holds the job's lock (`lock_job`) or made the job in this transaction.
    """
    check_pending(job)
    rows = [
        {
            "job_id": job.id,
            "external_id": p.external_id,
            "line_no": p.line_no,
            "question": p.question,
            "gold_raw": p.gold_raw,
            "gold": p.gold,
        }
        for p in problems
    ]
    if not rows:
        return 0
    known = set(
        session.scalars(
            sa.select(Problem.external_id).where(
                Problem.job_id == job.id,
                Problem.external_id.in_([r["external_id"] for r in rows]),
            )
        )
    )
    fresh = [r for r in rows if r["external_id"] not in known]
    if fresh:
        limits.check_problems(job.n_problems + len(fresh))
        session.execute(sa.insert(Problem), fresh)
        count_problems(session, job, len(fresh))
    return len(fresh)


def count_problems(session: Session, job: Job, added: int) -> None:
    """Add `added` to the job's problem counter, in the database."""
    session.execute(
        sa.update(Job)
        .where(Job.id == job.id)
        .values(n_problems=Job.n_problems + added)
        .execution_options(synchronize_session=False)
    )
    session.refresh(job, ["n_problems"])


def mark_running(session: Session, job: Job) -> list[int]:
    """Mark a job running; returns the ids of its problems that wait for generation."""
    if job.status in (JobStatus.CANCELLED, JobStatus.FAILED):
        raise JobConflict(f"job {job.id} is {job.status}; it cannot be started")
    if job.n_problems == 0:
        raise JobConflict(f"job {job.id} has no problems")
    if job.status == JobStatus.PENDING:
        job.status = JobStatus.RUNNING
        job.started_at = utcnow()
    session.flush()
    return list(
        session.scalars(
            sa.select(Problem.id)
            .where(Problem.job_id == job.id, Problem.status == ProblemStatus.PENDING)
            .order_by(Problem.id)
        )
    )


def start_job(session: Session, job: Job) -> int:
    """Mark a job running and enqueue its waiting problems' generation; returns how many.

    Starting a running job again enqueues nothing twice: a waiting step keeps its one row.
    """
    return len(enqueue_many(session, [NextStep("generate", i) for i in mark_running(session, job)]))


def resume_job(session: Session, job: Job) -> int:
    """Run a pending, running or failed job again: re-enqueue every problem not done."""
    if job.status in (JobStatus.DONE, JobStatus.CANCELLED):
        raise JobConflict(f"job {job.id} is {job.status}; there is nothing to resume")
    if job.status == JobStatus.FAILED:
        job.status, job.error, job.finished_at = JobStatus.RUNNING, None, None
    mark_running(session, job)
    waiting = Problem.job_id == job.id, Problem.status.in_(list(STAGE_OF))
    problems = session.scalars(sa.select(Problem).where(*waiting)).all()
    steps = [step for p in problems if (step := step_for(p)) is not None]
    session.execute(
        sa.update(Problem)
        .where(*waiting)
        .values(attempts=0, error=None)
        .execution_options(synchronize_session=False)
    )
    if job.n_problems and job.n_done >= job.n_problems:
        steps.append(NextStep("finalize", job.id))
    enqueue_many(session, steps, resend=True)
    return len(steps)


def cancel_job(session: Session, job: Job) -> None:
    """Cancel a job that has not finished (cancelling again is a no-op); JobConflict otherwise.

    Its idempotency key is freed: the same request again makes a new job, as a retry should.
    """
    if job.status == JobStatus.CANCELLED:
        return
    if job.status in (JobStatus.DONE, JobStatus.FAILED):
        raise JobConflict(f"job {job.id} is {job.status}; there is nothing to cancel")
    job.status = JobStatus.CANCELLED
    job.finished_at = utcnow()
    job.idempotency_key = None
    session.flush()


def _fingerprint(session: Session, spec: JobSpec, problems: Sequence[ProblemIn]) -> str:
    """The job's digest, with the weights its model names hold in the registry now."""
    names = (spec.generator, spec.verifier)
    digests = {
        name: sha
        for name, sha in session.execute(
            sa.select(ModelArtifact.name, ModelArtifact.sha256).where(ModelArtifact.name.in_(names))
        )
    }
    return spec.fingerprint(problems, [digests.get(n) if n else None for n in names])


def find_job(session: Session, spec: JobSpec, problems: Sequence[ProblemIn]) -> Job | None:
    """The newest unfinished or finished job of these parameters, models and problems."""
    fingerprint = _fingerprint(session, spec, problems)
    return session.scalars(
        sa.select(Job)
        .where(Job.fingerprint == fingerprint, Job.status != JobStatus.CANCELLED)
        .order_by(Job.id.desc())
        .limit(1)
    ).first()
