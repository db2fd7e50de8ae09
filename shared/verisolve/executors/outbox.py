"""The transactional outbox: a task message is written with the data it refers to, and sent after.

`enqueue` adds a row in the caller's transaction, so a rollback drops the message with the data.
`relay_once` publishes unsent rows and marks them sent. A row is marked only after the broker took
the message, so a crash in between sends it twice: delivery is at least once, and the stages make
a second delivery a no-op.

One row per (stage, row id): enqueueing the same step again is a no-op while its row waits, and
`resend=True` (the reconciler, `verisolve resume`) marks a sent row unsent again instead of
adding a second one. `attempts` counts how often the row was published.

Rows stay one per problem, but consecutive generate rows go out as one task over a chunk of
problems (`generate_chunk`), so a worker batches their rows together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from verisolve.db import session_scope
from verisolve.db.base import utcnow
from verisolve.executors.routes import CHUNK_ARG, ROUTES, TaskName, dedupe_key
from verisolve.pipeline.jobs import start_job
from verisolve.pipeline.stages import NextStep, Stage, rowcount
from verisolve.settings import get_settings
from verisolve.tables import Job, OutboxMessage

logger = logging.getLogger(__name__)

StepLike = NextStep | tuple[Stage, int]


class PublishError(RuntimeError):
    """The broker did not take a message (down, refused, not confirmed)."""


class Publisher(Protocol):
    """Sends one task message to a logical queue; raises PublishError when the broker fails."""

    def publish(self, task: str, queue: str, payload: dict[str, Any], message_id: str) -> None: ...


def _step(step: StepLike) -> NextStep:
    return step if isinstance(step, NextStep) else NextStep(*step)


def _row(step: NextStep) -> dict[str, Any]:
    route = ROUTES[step.stage]
    return {
        "task": route.task.value,
        "queue": route.queue.value,
        "payload": {route.arg: step.id},
        "dedupe_key": dedupe_key(step),
        "attempts": 0,
    }


INSERT_BATCH = 2000


def enqueue_many(session: Session, steps: Iterable[StepLike], *, resend: bool = False) -> list[str]:
    """Write the steps' messages in the caller's transaction; returns their dedupe keys."""
    rows = [_row(_step(s)) for s in steps]
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        insert: Any = postgresql.insert(OutboxMessage)
    elif dialect == "sqlite":
        insert = sqlite.insert(OutboxMessage)
    else:
        raise NotImplementedError(f"the outbox does not support {dialect}")
    # One multi-row INSERT per batch: PostgreSQL takes at most 65,535 parameters a statement.
    for start in range(0, len(rows), INSERT_BATCH):
        batch = insert.values(rows[start : start + INSERT_BATCH])
        if resend:
            statement = batch.on_conflict_do_update(
                index_elements=[OutboxMessage.dedupe_key],
                set_={"sent_at": None},
                where=OutboxMessage.sent_at.is_not(None),
            )
        else:
            statement = batch.on_conflict_do_nothing(index_elements=[OutboxMessage.dedupe_key])
        session.execute(statement)
    return [r["dedupe_key"] for r in rows]


def enqueue(session: Session, step: StepLike, *, resend: bool = False) -> str:
    """Write one step's message in the caller's transaction; returns its dedupe key."""
    return enqueue_many(session, [step], resend=resend)[0]


def enqueue_job(session: Session, job: Job) -> int:
    """Start a job and enqueue its problems' generation, in the caller's transaction."""
    return len(enqueue_many(session, [NextStep("generate", i) for i in start_job(session, job)]))


def relay_once(
    engine: sa.Engine, publisher: Publisher, batch: int = 100, keys: Sequence[str] | None = None
) -> int:
    """Publish up to `batch` unsent messages (only `keys`, when given); returns how many went."""
    query = (
        sa.select(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None))
        .order_by(OutboxMessage.id)
        .limit(batch)
    )
    if keys is not None:
        query = query.where(OutboxMessage.dedupe_key.in_(keys))
    if engine.dialect.name == "postgresql":
        # Relays running side by side take disjoint rows instead of waiting for each other.
        query = query.with_for_update(skip_locked=True)
    sent = 0
    with session_scope(engine) as session:
        for group in chunked(session.scalars(query).all(), get_settings().generate_chunk):
            first = group[0]
            message_id = f"{first.dedupe_key}#{first.attempts + 1}"
            if len(group) > 1:
                message_id = f"{first.dedupe_key}+{len(group) - 1}#{first.attempts + 1}"
            try:
                publisher.publish(first.task, first.queue, _payload(group), message_id)
            except PublishError as exc:
                # The broker is down: keep the rest for the next round, commit what went.
                logger.warning("outbox: %s not published: %s", first.dedupe_key, exc)
                break
            for message in group:
                message.sent_at = utcnow()
                message.attempts += 1
            sent += len(group)
    return sent


def chunked(messages: Sequence[OutboxMessage], size: int) -> list[list[OutboxMessage]]:
    """Messages in order, consecutive generate rows grouped up to `size` (one task, one batch)."""
    groups: list[list[OutboxMessage]] = []
    for message in messages:
        last = groups[-1] if groups else None
        if (
            last is not None
            and message.task == last[0].task == TaskName.GENERATE.value
            and len(last) < size
        ):
            last.append(message)
        else:
            groups.append([message])
    return groups


def _payload(group: Sequence[OutboxMessage]) -> dict[str, Any]:
    """One message's own payload, or a chunk's problem ids."""
    if len(group) == 1:
        return dict(group[0].payload)
    return {CHUNK_ARG: [int(m.payload[ROUTES["generate"].arg]) for m in group]}


def unsent_count(session: Session) -> int:
    """Messages that wait for the relay."""
    count = session.scalar(
        sa.select(sa.func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    )
    return int(count or 0)


def prune_sent(engine: sa.Engine, older_than_s: float) -> int:
    """Delete messages sent longer ago than `older_than_s`; returns how many."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with session_scope(engine) as session:
        return rowcount(
            session.execute(
                sa.delete(OutboxMessage).where(
                    OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at < cutoff
                )
            )
        )
