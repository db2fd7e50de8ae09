"""The transactional outbox, writing side: a task message is written with the data it refers to.

`enqueue_many` adds rows in the caller's transaction, so a rollback drops the messages with the
data; the relay (verisolve.executors.outbox) publishes them after the commit.

One row per (stage, row id): enqueueing the same step again is a no-op while its row waits, and
`resend=True` (the reconciler, `verisolve resume`) marks a sent row unsent again instead of
adding a second one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from verisolve.pipeline.routes import ROUTES, dedupe_key
from verisolve.pipeline.stages import NextStep, Stage
from verisolve.tables import OutboxMessage

StepLike = NextStep | tuple[Stage, int]
# Rows per multi-row INSERT: PostgreSQL takes at most 65,535 parameters a statement.
INSERT_BATCH = 2000


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


def unsent_count(session: Session) -> int:
    """Messages that wait for the relay."""
    count = session.scalar(
        sa.select(sa.func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    )
    return int(count or 0)
