"""The exporter reads jobs, accuracy, the outbox and the broker's queues at scrape time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta

import kombu
import pytest
import sqlalchemy as sa

from jobtools import make_job, spec
from verisolve.db import session_scope
from verisolve.db.base import utcnow
from verisolve.metrics_exporter import JobCollector, default_queues
from verisolve.pipeline.jobs import mark_running
from verisolve.pipeline.stages import (
    GeneratedCandidate,
    SamplingRequest,
    aggregate_problem,
    finalize_job,
    generate_problem,
)
from verisolve.problems import ProblemIn
from verisolve.tables import Job, OutboxMessage

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Question -> the answers its three candidates give. Gold is 4 everywhere.
ANSWERS = {
    "q-right": ["4", "4", "1"],  # majority right, first right
    "q-covered": ["1", "4", "1"],  # majority wrong, but one candidate is right: covered
    "q-wrong": ["1", "2", "3"],  # nobody right
    "q-left": ["4", "4", "4"],  # not run: the job stays half done
}


class Scripted:
    """A generator double answering from ANSWERS."""

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        answers = ANSWERS[request.question]
        return [GeneratedCandidate(i, f"so #### {a}", 5, "answer") for i, a in enumerate(answers)]


def samples(collector: JobCollector) -> Samples:
    """Every sample of one scrape, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def get(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def job_id(engine: sa.Engine) -> Iterator[int]:
    """A committed running job: 3 of 4 graded problems done, and one unsent outbox row."""
    problems = [ProblemIn(f"p{i}", q, "4", "4", i + 1) for i, q in enumerate(ANSWERS)]
    with session_scope(engine) as session:
        job = make_job(session, spec("scripted", n_samples=3, name="exp"), problems)
        ids = mark_running(session, job)
        created = job.id
        session.add(
            OutboxMessage(task="t", queue="generate", payload={}, dedupe_key=f"x:{uuid.uuid4()}")
        )
    for problem_id in ids[:3]:
        with session_scope(engine) as session:
            generate_problem(session, problem_id, lambda _: Scripted())
        with session_scope(engine) as session:
            aggregate_problem(session, problem_id)
    yield created
    with session_scope(engine) as session:
        session.execute(sa.delete(Job).where(Job.id == created))
        session.execute(sa.delete(OutboxMessage).where(OutboxMessage.task == "t"))


def test_an_active_job_reports_progress_accuracy_coverage_and_gap(
    engine: sa.Engine, job_id: int
) -> None:
    found = samples(JobCollector(engine, None, [], recent_seconds=3600))
    key = str(job_id)
    assert get(found, "verisolve_exporter_up", source="database") == 1
    assert get(found, "verisolve_job_progress_ratio", job_id=key) == 0.75
    assert get(found, "verisolve_job_problems", job_id=key, status="done") == 3
    assert get(found, "verisolve_job_problems", job_id=key, status="pending") == 1
    assert get(found, "verisolve_job_graded_problems", job_id=key) == 3
    assert get(found, "verisolve_job_accuracy_ratio", job_id=key, strategy="majority") == (
        pytest.approx(1 / 3)
    )
    assert get(found, "verisolve_job_accuracy_ratio", job_id=key, strategy="first") == (
        pytest.approx(1 / 3)
    )
    assert get(found, "verisolve_job_coverage_ratio", job_id=key) == pytest.approx(2 / 3)
    # The job answers by majority: coverage 2/3 minus accuracy 1/3.
    assert get(found, "verisolve_job_selection_gap_ratio", job_id=key) == pytest.approx(1 / 3)
    info = [dict(labels) for (name, labels) in found if name == "verisolve_job_info"]
    mine = next(labels for labels in info if labels["job_id"] == key)
    assert mine["generator"] == "scripted"
    assert mine["name"] == "exp"
    assert mine["status"] == "running"
    assert mine["strategy"] == "majority"
    stamp = get(found, "verisolve_job_last_progress_timestamp_seconds", job_id=key)
    assert stamp is not None
    assert abs(stamp - utcnow().timestamp()) < 300
    assert (get(found, "verisolve_jobs", status="running") or 0) >= 1
    assert (get(found, "verisolve_outbox_pending_messages") or 0) >= 1
    assert (get(found, "verisolve_outbox_oldest_pending_age_seconds") or -1) >= 0


def test_a_finished_job_stays_while_recent_then_leaves(engine: sa.Engine, job_id: int) -> None:
    with session_scope(engine) as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(n_done=Job.n_problems))
        assert finalize_job(session, job_id)
    key = str(job_id)
    recent = samples(JobCollector(engine, None, [], recent_seconds=3600))
    assert get(recent, "verisolve_job_progress_ratio", job_id=key) == 1.0
    with session_scope(engine) as session:
        session.execute(
            sa.update(Job).where(Job.id == job_id).values(finished_at=utcnow() - timedelta(hours=2))
        )
    later = samples(JobCollector(engine, None, [], recent_seconds=3600))
    assert get(later, "verisolve_job_progress_ratio", job_id=key) is None
    assert (get(later, "verisolve_jobs", status="done") or 0) >= 1


def test_an_unreachable_database_reports_down_and_no_job_series() -> None:
    dead = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    found = samples(JobCollector(dead, None, [], recent_seconds=3600))
    assert get(found, "verisolve_exporter_up", source="database") == 0
    assert not any(name.startswith("verisolve_job") for name, _ in found)


@pytest.mark.rabbitmq
def test_queue_depth_and_consumers_come_from_the_broker(rabbitmq_url: str, sqlite_url: str) -> None:
    name, missing = f"verisolve-test-{uuid.uuid4().hex[:8]}", f"absent-{uuid.uuid4().hex[:8]}"
    with kombu.Connection(rabbitmq_url) as conn:
        queue = kombu.Queue(name, routing_key=name, durable=False, auto_delete=False)
        producer = conn.Producer()
        bound = queue(conn.default_channel)
        bound.declare()
        try:
            for i in range(3):
                producer.publish({"i": i}, routing_key=name, declare=[bound])
            collector = JobCollector(
                sa.create_engine(sqlite_url), rabbitmq_url, [name, missing], 3600
            )
            found = samples(collector)
        finally:
            bound.delete()
    assert get(found, "verisolve_exporter_up", source="broker") == 1
    assert get(found, "verisolve_queue_messages", queue=name) == 3
    assert get(found, "verisolve_queue_consumers", queue=name) == 0
    assert get(found, "verisolve_queue_messages", queue=missing) == 0


def test_an_unreachable_broker_reports_down(sqlite_url: str) -> None:
    collector = JobCollector(
        sa.create_engine(sqlite_url), "amqp://guest:guest@127.0.0.1:1//", ["q"], 3600
    )
    found = samples(collector)
    assert get(found, "verisolve_exporter_up", source="broker") == 0
    assert get(found, "verisolve_exporter_up", source="database") == 1
    assert get(found, "verisolve_queue_messages", queue="q") is None


def test_default_queues_follow_the_deployment_prefix() -> None:
    assert default_queues("") == ["generate", "verify", "aggregate", "dead"]
    assert default_queues("blue.") == [
        "blue.generate",
        "blue.verify",
        "blue.aggregate",
        "blue.dead",
    ]
