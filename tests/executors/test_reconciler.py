"""The reconciler re-enqueues stalled work only, gives up after a limit, and finalizes done jobs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from doubles import ScriptedGenerator

from jobtools import make_job, spec
from verisolve.db import session_scope
from verisolve.db.base import utcnow
from verisolve.executors.outbox import relay_once
from verisolve.executors.reconciler import finalize_done_jobs, reconcile
from verisolve.executors.relay import busy_queues
from verisolve.pipeline.jobs import JobError, resume_job, start_job
from verisolve.pipeline.outbox import enqueue
from verisolve.pipeline.stages import NextStep, aggregate_problem, generate_problem
from verisolve.problems import ProblemIn
from verisolve.tables import Job, JobStatus, OutboxMessage, Problem, ProblemStatus

PROBLEMS = [ProblemIn(f"p{i}", f"What is {i}+{i}?", str(2 * i), str(2 * i), i) for i in range(3)]
ANSWERS = {p.question: [p.gold or ""] for p in PROBLEMS}


@pytest.fixture
def engine(own_engine: sa.Engine) -> sa.Engine:
    """This module's own database: these tests commit."""
    return own_engine


class NullPublisher:
    def publish(self, task: str, queue: str, payload: dict[str, object], message_id: str) -> None:
        pass


@pytest.fixture
def job_id(engine: sa.Engine) -> Iterator[int]:
    """A running job without a verifier, its generate steps sent long ago; removed afterwards."""
    with session_scope(engine) as session:
        session.execute(sa.delete(OutboxMessage))
        job = make_job(session, spec("g", n_samples=2), PROBLEMS)
        start_job(session, job)
        created = job.id
    relay_once(engine, NullPublisher())
    age(engine, created, seconds=600)
    yield created
    with session_scope(engine) as session:
        session.execute(sa.delete(Job).where(Job.id == created))
        session.execute(sa.delete(OutboxMessage))


def age(engine: sa.Engine, job_id: int, seconds: float) -> None:
    """Make a job's problems and messages look `seconds` old."""
    then = utcnow() - timedelta(seconds=seconds)
    with session_scope(engine) as session:
        session.execute(sa.update(Problem).where(Problem.job_id == job_id).values(updated_at=then))
        session.execute(sa.update(OutboxMessage).values(sent_at=then))


def unsent(engine: sa.Engine) -> set[str]:
    with session_scope(engine) as session:
        return set(
            session.scalars(
                sa.select(OutboxMessage.dedupe_key).where(OutboxMessage.sent_at.is_(None))
            )
        )


def problem_ids(engine: sa.Engine, job_id: int) -> list[int]:
    with session_scope(engine) as session:
        return list(
            session.scalars(
                sa.select(Problem.id).where(Problem.job_id == job_id).order_by(Problem.id)
            )
        )


def test_stalled_problems_are_enqueued_again_once(engine: sa.Engine, job_id: int) -> None:
    report = reconcile(engine, stale_after_s=60)
    ids = problem_ids(engine, job_id)
    assert report.resent == 3
    assert unsent(engine) == {f"generate:{i}" for i in ids}
    # Just re-enqueued: the problems count as fresh, so the next round leaves them alone.
    assert reconcile(engine, stale_after_s=60).resent == 0
    with session_scope(engine) as session:
        assert set(
            session.scalars(sa.select(Problem.attempts).where(Problem.job_id == job_id))
        ) == {1}


def test_live_messages_and_busy_queues_are_left_alone(engine: sa.Engine, job_id: int) -> None:
    first, second, third = problem_ids(engine, job_id)
    with session_scope(engine) as session:
        enqueue(session, NextStep("generate", first), resend=True)  # waits for the relay
        session.execute(
            sa.update(OutboxMessage)
            .where(OutboxMessage.dedupe_key == f"generate:{second}")
            .values(sent_at=utcnow())  # sent a moment ago: still queued, presumably
        )
    assert reconcile(engine, stale_after_s=60, busy_queues={"generate"}).resent == 0
    assert reconcile(engine, stale_after_s=60).resent == 1
    assert unsent(engine) == {f"generate:{first}", f"generate:{third}"}


def test_a_job_fails_after_too_many_attempts(engine: sa.Engine, job_id: int) -> None:
    for _ in range(2):
        assert reconcile(engine, stale_after_s=60, max_attempts=2).resent == 3
        relay_once(engine, NullPublisher())
        age(engine, job_id, seconds=600)
    report = reconcile(engine, stale_after_s=60, max_attempts=2)
    assert (report.resent, report.failed_jobs) == (0, 1)
    with session_scope(engine) as session:
        job = session.get_one(Job, job_id)
        assert job.status == JobStatus.FAILED
        assert "'p0' (line 0) stalled at generate" in (job.error or "")
        # Resuming runs it again from where each problem stood, with fresh attempts.
        assert resume_job(session, job) == 3
        assert job.status == JobStatus.RUNNING
    assert len(unsent(engine)) == 3
    assert reconcile(engine, stale_after_s=60).resent == 0


def test_done_jobs_are_finalized(engine: sa.Engine, job_id: int) -> None:
    assert finalize_done_jobs(engine) == 0
    for problem_id in problem_ids(engine, job_id):
        with session_scope(engine) as session:
            step = generate_problem(session, problem_id, lambda _: ScriptedGenerator(ANSWERS))
            assert step == NextStep("aggregate", problem_id)
        with session_scope(engine) as session:
            aggregate_problem(session, problem_id)
    report = reconcile(engine, stale_after_s=60)
    assert (report.resent, report.finalized) == (0, 1)
    with session_scope(engine) as session:
        job = session.get_one(Job, job_id)
        assert job.status == JobStatus.DONE
        assert (job.metrics or {})["strategies"]["majority"] == 1.0
        with pytest.raises(JobError, match="nothing to resume"):
            resume_job(session, job)


def test_resume_enqueues_each_problem_at_its_stage(engine: sa.Engine, job_id: int) -> None:
    first, second, _ = problem_ids(engine, job_id)
    with session_scope(engine) as session:
        generate_problem(session, first, lambda _: ScriptedGenerator(ANSWERS))
        session.execute(
            sa.update(Problem).where(Problem.id == second).values(status=ProblemStatus.DONE)
        )
    with session_scope(engine) as session:
        assert resume_job(session, session.get_one(Job, job_id)) == 2
    assert f"aggregate:{first}" in unsent(engine)
    assert f"generate:{second}" not in unsent(engine)


@pytest.mark.parametrize(
    ("depths", "busy"),
    [
        ({"generate": 0, "verify": 0, "aggregate": 0}, set()),
        ({"generate": 4, "verify": 0, "aggregate": 0}, {"generate"}),
        ({"generate": 0, "verify": None, "aggregate": 1}, {"verify", "aggregate"}),
    ],
)
def test_busy_queues_are_those_with_messages_or_unknown(
    depths: dict[str, int | None], busy: set[str]
) -> None:
    assert busy_queues(depths.__getitem__) == busy
