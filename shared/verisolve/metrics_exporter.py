"""The metrics exporter: job, accuracy, outbox and queue gauges, read at scrape time.

Nothing is cached between scrapes: each scrape reads PostgreSQL (the source of truth) in one
read-only transaction and asks the broker for each queue's depth, so the numbers are never older
than the scrape and one exporter serves any number of workers. Per-job series cover active jobs
only: running ones, and those finished within `recent_seconds` (so a dashboard still shows a
job's final accuracy for a while). A source that cannot be read reports
``verisolve_exporter_up{source=...} 0`` and its gauges are left out of that scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import kombu.connection
import kombu.exceptions
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from verisolve import metrics as m
from verisolve.pipeline.routes import QueueName, physical_queue
from verisolve.tables import Candidate, Job, JobStatus, OutboxMessage, Problem, ProblemStatus
from verisolve.tables import Selection as Sel

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 3.0
# kombu's constructors are unannotated; typed as Any once, here.
Connection: Any = kombu.connection.Connection


def default_queues(prefix: str = "") -> list[str]:
    """The broker queues of a deployment: the three work queues and the dead-letter queue."""
    return [physical_queue(q, prefix) for q in (*QueueName, "dead")]


@dataclass(frozen=True)
class ActiveJob:
    """The job columns the per-job gauges need."""

    id: int
    name: str
    status: str
    generator: str
    verifier: str | None
    strategy: str
    n_problems: int
    n_done: int
    started_at: datetime | None


class JobCollector(Collector):
    """Reads the database and the broker on every collect()."""

    def __init__(
        self,
        engine: sa.Engine,
        broker_url: str | None,
        queues: Sequence[str],
        recent_seconds: float,
    ) -> None:
        self._engine = engine
        self._broker_url = broker_url
        self._queues = list(queues)
        self._recent = timedelta(seconds=recent_seconds)

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields, without touching any source."""
        return [spec.family() for spec in m.EXPORTER_METRICS]

    def collect(self) -> Iterable[Metric]:
        """Every exporter gauge, read now."""
        up = m.EXPORTER_UP.family()
        families: list[Metric] = []
        try:
            families.extend(self._database())
            up.add_metric(["database"], 1.0)
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("exporter: database read failed: %s", exc)
            families.clear()
            up.add_metric(["database"], 0.0)
        if self._broker_url:
            try:
                families.extend(self._broker())
                up.add_metric(["broker"], 1.0)
            except (OSError, kombu.exceptions.KombuError) as exc:
                logger.warning("exporter: broker read failed: %s", exc)
                up.add_metric(["broker"], 0.0)
        return [*families, up]

    def _database(self) -> Iterator[GaugeMetricFamily]:
        with Session(self._engine) as session, session.begin():
            yield _jobs_by_status(session)
            jobs = _active_jobs(session, datetime.now(UTC) - self._recent)
            yield from _job_families(session, jobs)
            yield from _outbox(session)

    def _broker(self) -> list[GaugeMetricFamily]:
        messages, consumers = m.QUEUE_MESSAGES.family(), m.QUEUE_CONSUMERS.family()
        assert self._broker_url is not None
        with Connection(self._broker_url, connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            # One quick retry at most: a scrape must not wait out kombu's back-off.
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0)
            for queue in self._queues:
                ready, attached = _queue_depth(conn, queue)
                messages.add_metric([queue], ready)
                consumers.add_metric([queue], attached)
        return [messages, consumers]


def _queue_depth(conn: Any, queue: str) -> tuple[int, int]:
    """Ready messages and consumers of a queue; a queue not declared yet holds nothing."""
    channel = conn.channel()
    try:
        _, ready, attached = channel.queue_declare(queue=queue, passive=True)
        return int(ready), int(attached)
    except conn.channel_errors:
        # RabbitMQ answers 404 and closes the channel; Redis forgets an empty list's key.
        return 0, 0
    finally:
        try:
            channel.close()
        except conn.channel_errors + conn.connection_errors:
            pass


def _jobs_by_status(session: Session) -> GaugeMetricFamily:
    family = m.JOBS.family()
    rows = session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status))
    counts = {status: int(n) for status, n in rows}
    for status in JobStatus:
        family.add_metric([status.value], float(counts.get(status.value, 0)))
    return family


def _active_jobs(session: Session, since: datetime) -> list[ActiveJob]:
    rows = session.execute(
        sa.select(
            Job.id,
            Job.name,
            Job.status,
            Job.generator,
            Job.verifier,
            Job.strategy,
            Job.n_problems,
            Job.n_done,
            Job.started_at,
        )
        .where(sa.or_(Job.status == JobStatus.RUNNING, Job.finished_at >= since))
        .order_by(Job.id)
    )
    return [ActiveJob(*row) for row in rows]


def _job_families(session: Session, jobs: list[ActiveJob]) -> Iterator[GaugeMetricFamily]:
    info, problems, progress = m.JOB_INFO.family(), m.JOB_PROBLEMS.family(), m.JOB_PROGRESS.family()
    graded, accuracy = m.JOB_GRADED.family(), m.JOB_ACCURACY.family()
    coverage, gap, last = (
        m.JOB_COVERAGE.family(),
        m.JOB_SELECTION_GAP.family(),
        m.JOB_LAST_PROGRESS.family(),
    )
    ids = [job.id for job in jobs]
    by_status, last_change = _problem_counts(session, ids)
    accuracies = _accuracies(session, ids)
    coverages = _coverages(session, ids)
    for job in jobs:
        key = str(job.id)
        info.add_metric(
            [key, job.name, job.status, job.generator, job.verifier or "", job.strategy], 1.0
        )
        for status in ProblemStatus:
            problems.add_metric([key, status.value], float(by_status.get((job.id, status), 0)))
        progress.add_metric([key], job.n_done / job.n_problems if job.n_problems else 0.0)
        stamps = [t for t in (last_change.get(job.id), job.started_at) if t is not None]
        if stamps:
            last.add_metric([key], max(_epoch(t) for t in stamps))
        n_graded, n_covered = coverages.get(job.id, (0, 0))
        graded.add_metric([key], float(n_graded))
        job_accuracy = accuracies.get(job.id, {})
        for strategy, value in sorted(job_accuracy.items()):
            accuracy.add_metric([key, strategy], value)
        if n_graded:
            coverage.add_metric([key], n_covered / n_graded)
            if job.strategy in job_accuracy:
                gap.add_metric([key], n_covered / n_graded - job_accuracy[job.strategy])
    yield from (info, problems, progress, graded, accuracy, coverage, gap, last)


def _problem_counts(
    session: Session, ids: list[int]
) -> tuple[dict[tuple[int, str], int], dict[int, datetime]]:
    counts: dict[tuple[int, str], int] = {}
    last: dict[int, datetime] = {}
    if not ids:
        return counts, last
    rows = session.execute(
        sa.select(Problem.job_id, Problem.status, sa.func.count(), sa.func.max(Problem.updated_at))
        .where(Problem.job_id.in_(ids))
        .group_by(Problem.job_id, Problem.status)
    )
    for job_id, status, count, changed in rows:
        counts[(job_id, status)] = int(count)
        if changed is not None and (job_id not in last or changed > last[job_id]):
            last[job_id] = changed
    return counts, last


def _graded_done(ids: list[int]) -> sa.ColumnElement[bool]:
    return sa.and_(
        Problem.job_id.in_(ids), Problem.status == ProblemStatus.DONE, Problem.gold.is_not(None)
    )


def _accuracies(session: Session, ids: list[int]) -> dict[int, dict[str, float]]:
    """Per job and strategy: correct selections over graded done problems."""
    if not ids:
        return {}
    rows = session.execute(
        sa.select(
            Problem.job_id,
            Sel.strategy,
            sa.func.count(Sel.correct),
            sa.func.sum(sa.case((Sel.correct.is_(True), 1), else_=0)),
        )
        .join(Problem, Problem.id == Sel.problem_id)
        .where(_graded_done(ids), Sel.correct.is_not(None))
        .group_by(Problem.job_id, Sel.strategy)
    )
    result: dict[int, dict[str, float]] = {}
    for job_id, strategy, n, right in rows:
        result.setdefault(job_id, {})[strategy] = int(right or 0) / int(n)
    return result


def _coverages(session: Session, ids: list[int]) -> dict[int, tuple[int, int]]:
    """Per job: graded done problems, and those with a candidate equal to the gold answer.

    Both answers and gold answers are stored canonical (verisolve.answers.canonical), so string
    equality is numeric equality here.
    """
    if not ids:
        return {}
    solved = (
        sa.select(Candidate.id)
        .where(Candidate.problem_id == Problem.id, Candidate.answer == Problem.gold)
        .exists()
    )
    rows = session.execute(
        sa.select(Problem.job_id, sa.func.count(), sa.func.sum(sa.case((solved, 1), else_=0)))
        .where(_graded_done(ids))
        .group_by(Problem.job_id)
    )
    return {job_id: (int(n), int(hit or 0)) for job_id, n, hit in rows}


def _outbox(session: Session) -> Iterator[GaugeMetricFamily]:
    pending, oldest = m.OUTBOX_PENDING.family(), m.OUTBOX_OLDEST_AGE.family()
    count, first = session.execute(
        sa.select(sa.func.count(), sa.func.min(OutboxMessage.created_at)).where(
            OutboxMessage.sent_at.is_(None)
        )
    ).one()
    pending.add_metric([], float(count))
    oldest.add_metric([], max(0.0, time.time() - _epoch(first)) if first is not None else 0.0)
    yield from (pending, oldest)


def _epoch(value: Any) -> float:
    """Unix time of a database timestamp (SQLite hands back naive UTC, or even a string)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    stamp: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
    return stamp.timestamp()


def exporter_registry(collector: JobCollector) -> CollectorRegistry:
    """A registry holding only the exporter's collector."""
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def serve(collector: JobCollector, port: int, addr: str = "0.0.0.0") -> Any:
    """Serve the collector's metrics on a daemon thread; returns the HTTP server."""
    server, _ = start_http_server(port, addr=addr, registry=exporter_registry(collector))
    return server
