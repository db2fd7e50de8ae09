"""The reconciler: re-enqueue work that stalled, and finalize jobs that are done.

A problem has stalled when its job runs, it waits for a stage, it has not moved for
`stale_after_s`, and its stage's message neither waits in the outbox nor was sent within that
time. Its message was lost (dead-lettered, purged, a task that raised): the reconciler marks the
outbox row unsent again and counts the attempt on the problem. After `max_attempts` the job fails,
naming the problem; `verisolve resume` (pipeline.jobs.resume_job) starts it again.
`stale_after_s` must exceed the longest task, or a task still running is duplicated (harmless:
the duplicate is a no-op, but it costs).
"""

from __future__ import annotations

import logging
from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.db import session_scope
from verisolve.db.base import utcnow
from verisolve.pipeline.outbox import enqueue
from verisolve.pipeline.routes import ROUTES, STAGE_OF, dedupe_key
from verisolve.pipeline.stages import NextStep, Stage, finalize_job, rowcount
from verisolve.tables import Job, JobStatus, OutboxMessage, Problem

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BATCH = 500


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconciliation did."""

    resent: int = 0
    failed_jobs: int = 0
    finalized: int = 0


def _stalled(session: Session, cutoff: datetime, busy: Container[str]) -> list[Problem]:
    """Problems of running jobs that have not moved since `cutoff` and have no live message."""
    candidates = session.scalars(
        sa.select(Problem)
        .join(Job, Job.id == Problem.job_id)
        .where(
            Job.status == JobStatus.RUNNING,
            Problem.status.in_(list(STAGE_OF)),
            Problem.updated_at < cutoff,
        )
        .order_by(Problem.id)
        .limit(BATCH)
    ).all()
    steps = {p.id: NextStep(STAGE_OF[p.status], p.id) for p in candidates}
    live = set(
        session.scalars(
            sa.select(OutboxMessage.dedupe_key).where(
                OutboxMessage.dedupe_key.in_([dedupe_key(s) for s in steps.values()]),
                sa.or_(OutboxMessage.sent_at.is_(None), OutboxMessage.sent_at >= cutoff),
            )
        )
    )
    return [
        p
        for p in candidates
        if dedupe_key(steps[p.id]) not in live and ROUTES[steps[p.id].stage].queue not in busy
    ]


def _fail_job(session: Session, problem: Problem, stage: Stage) -> bool:
    """Fail a problem's job after too many attempts; True if this call did it."""
    error = (
        f"problem {problem.external_id!r} (line {problem.line_no}) stalled at {stage} "
        f"after {problem.attempts} attempts" + (f": {problem.error}" if problem.error else "")
    )
    result = session.execute(
        sa.update(Job)
        .where(Job.id == problem.job_id, Job.status == JobStatus.RUNNING)
        .values(status=JobStatus.FAILED, error=error, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def _resend(session: Session, problem: Problem, cutoff: datetime) -> bool:
    """Count an attempt and re-enqueue, unless another reconciler just did."""
    result = session.execute(
        sa.update(Problem)
        .where(
            Problem.id == problem.id,
            Problem.status == problem.status,
            Problem.updated_at < cutoff,
        )
        .values(attempts=Problem.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        return False
    enqueue(session, NextStep(STAGE_OF[problem.status], problem.id), resend=True)
    return True


def reconcile(
    engine: sa.Engine,
    stale_after_s: float,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    busy_queues: Container[str] = (),
) -> ReconcileReport:
    """Re-enqueue stalled problems (not those of `busy_queues`); finalize jobs that are done."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    resent = failed = 0
    with session_scope(engine) as session:
        for problem in _stalled(session, cutoff, busy_queues):
            stage = STAGE_OF[problem.status]
            if problem.attempts >= max_attempts:
                failed += _fail_job(session, problem, stage)
            elif _resend(session, problem, cutoff):
                logger.warning("reconciler: re-enqueued %s of problem %d", stage, problem.id)
                resent += 1
    return ReconcileReport(resent, failed, finalize_done_jobs(engine))


def finalize_done_jobs(engine: sa.Engine) -> int:
    """Finalize running jobs whose counters say every problem is done; returns how many."""
    with session_scope(engine) as session:
        ids = list(
            session.scalars(
                sa.select(Job.id).where(
                    Job.status == JobStatus.RUNNING,
                    Job.n_problems > 0,
                    Job.n_done >= Job.n_problems,
                )
            )
        )
    finalized = 0
    for job_id in ids:
        with session_scope(engine) as session:
            finalized += finalize_job(session, job_id)
    return finalized
