"""What every Celery task shares: the stage transaction, lazy models, worker start-up.

A task opens a `stage_transaction`, calls one stage function and names the step that follows (a
generate task over a chunk of problems opens one per problem, as each completes); the
step's outbox row commits with the stage's writes, and the task then publishes it itself (the fast
path; the relay loop sends whatever this misses). A redelivered message finds the problem moved on
and does nothing; a duplicate that ran alongside loses at the guarded UPDATE or the unique key.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from billiard.process import current_process  # type: ignore[import-untyped]
from celery.signals import worker_process_init
from sqlalchemy.orm import Session

from verisolve.db import get_engine, session_scope
from verisolve.db.engine import dispose_engines
from verisolve.executors import instrumentation
from verisolve.executors.celery_app import (
    BROKER_ERRORS,
    TASK_MODULES,
    CeleryPublisher,
    app,
    declare_topology,
)
from verisolve.executors.outbox import relay_once
from verisolve.pipeline.outbox import enqueue
from verisolve.pipeline.routes import QueueName, physical_queue
from verisolve.pipeline.stages import (
    CandidateGenerator,
    CandidateScorer,
    NextStep,
    SamplingRequest,
    StageConflictError,
    generate_stream,
    pending_request,
    store_candidates,
)
from verisolve.settings import get_settings
from verisolve.tables import Problem

logger = logging.getLogger(__name__)

PG_UNIQUE_VIOLATION = "23505"


_publisher: CeleryPublisher | None = None


@lru_cache(maxsize=4)
def generator_named(name: str) -> CandidateGenerator:
    """A registered generator, loaded in this process on first use (after fork), instrumented."""
    from verisolve.executors import loading

    return instrumentation.instrument_generator(loading.load_generator(name))


@lru_cache(maxsize=4)
def scorer_named(name: str) -> CandidateScorer:
    """A registered verifier, loaded in this process on first use (after fork), instrumented."""
    from verisolve.executors import loading

    return instrumentation.instrument_scorer(loading.load_scorer(name))


class StageRun:
    """One task's unit of work: the session, and the step that follows."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.next: NextStep | None = None


def is_duplicate(exc: sa.exc.IntegrityError) -> bool:
    """Whether a natural key refused the write: another delivery wrote the same rows."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate == PG_UNIQUE_VIOLATION or "UNIQUE constraint failed" in str(exc.orig)


@contextmanager
def stage_transaction(
    problem_id: int | None = None, engine: sa.Engine | None = None
) -> Iterator[StageRun]:
    """Run a stage and write its next step in one transaction, then publish that step.

    When the stage raises, the error is noted on the problem (for `verisolve status` and the
    reconciler's verdict) and re-raised: Celery then dead-letters the message.
    """
    engine = engine or get_engine()
    key: str | None = None
    try:
        with session_scope(engine) as session:
            run = StageRun(session)
            yield run
            if run.next is not None:
                key = enqueue(session, run.next)
    except StageConflictError as exc:
        logger.info("no-op: %s", exc)
        return
    except sa.exc.IntegrityError as exc:
        if not is_duplicate(exc):
            raise
        logger.info("no-op: another delivery wrote these rows first (%s)", exc.orig)
        return
    except Exception as exc:
        if problem_id is not None:
            _note_error(engine, problem_id, exc)
        raise
    if key is not None:
        _publish_now(engine, key)


def generate_chunk(problem_ids: Sequence[int], engine: sa.Engine | None = None) -> None:
    """Generate a chunk of problems in one batch; each one commits with its next step on its own.

    Problems that no longer wait for candidates (a redelivered chunk) are skipped; a problem is
    committed as soon as its last row ends, so a worker killed mid-chunk loses only the rest.
    """
    engine = engine or get_engine()
    by_generator: dict[str, list[tuple[int, SamplingRequest]]] = {}
    with session_scope(engine) as session:
        for problem_id in problem_ids:
            request = pending_request(session, problem_id)
            if request is not None:
                name = session.get_one(Problem, problem_id).job.generator
                by_generator.setdefault(name, []).append((problem_id, request))
    for name, requests in by_generator.items():
        left = {problem_id for problem_id, _ in requests}
        try:
            for problem_id, candidates in generate_stream(generator_named(name), requests):
                left.discard(problem_id)
                with stage_transaction(problem_id, engine) as run:
                    run.next = store_candidates(run.session, problem_id, candidates)
        except Exception as exc:
            for problem_id in left:
                _note_error(engine, problem_id, exc)
            raise


def _note_error(engine: sa.Engine, problem_id: int, exc: Exception) -> None:
    """Keep the last error of a problem's stage, best effort."""
    try:
        with session_scope(engine) as session:
            session.execute(
                sa.update(Problem)
                .where(Problem.id == problem_id)
                .values(error=f"{type(exc).__name__}: {exc}"[:2000])
            )
    except sa.exc.SQLAlchemyError as note_exc:
        logger.warning("could not note the error of problem %d: %s", problem_id, note_exc)


def _publish_now(engine: sa.Engine, key: str) -> None:
    """The fast path: send the committed step at once; the relay loop covers any failure."""
    global _publisher
    if _publisher is None:
        _publisher = CeleryPublisher(app)
    try:
        relay_once(engine, _publisher, keys=[key])
    except sa.exc.SQLAlchemyError as exc:
        logger.warning("outbox %s left to the relay: %s", key, exc)


def _child_started(**_: Any) -> None:
    """In each forked child: fresh database connections, and one GPU per process."""
    dispose_engines()
    devices = visible_gpus()
    if get_settings().provider == "cuda" and devices:
        index = getattr(current_process(), "index", 0) or 0
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]


worker_process_init.connect(_child_started)


def visible_gpus() -> list[str]:
    """The GPUs this worker may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def default_concurrency(queue: QueueName) -> int:
    """One process per GPU for the model queues (one on a CPU); two for aggregation."""
    if queue == QueueName.AGGREGATE:
        return 2
    if get_settings().provider == "cuda":
        return max(1, len(visible_gpus()))
    return 1


def declare_queues() -> None:
    """Declare every queue before the worker starts consuming.

    On RabbitMQ, Celery binds every queue of `task_queues` to its delayed-delivery exchanges at
    start-up, not only the one the worker consumes, and logs a CRITICAL line for any queue that no
    process has declared yet, as when the three workers of a new deployment start together.
    With the broker unreachable this warns and goes on: Celery keeps retrying the connection.
    """
    try:
        declare_topology(app)
    except BROKER_ERRORS as exc:
        logger.warning("could not declare the queues yet (%s); the worker retries the broker", exc)


def start_worker(queue: QueueName, concurrency: int | None = None, loglevel: str = "INFO") -> None:
    """Run a prefork Celery worker on one queue until it is stopped."""
    for module in TASK_MODULES:
        __import__(module)
    instrumentation.install(app)
    declare_queues()
    processes = concurrency or default_concurrency(queue)
    name = physical_queue(queue, get_settings().queue_prefix)
    app.worker_main(
        [
            "worker",
            f"--queues={name}",
            f"--concurrency={processes}",
            "--pool=prefork",
            f"--hostname={queue.value}-{os.getpid()}@%h",
            f"--loglevel={loglevel}",
            "--without-mingle",
            "--without-gossip",
        ]
    )
