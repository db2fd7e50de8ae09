"""The transactional outbox, sending side: `relay_once` publishes unsent rows and marks them sent.

The rows are written by verisolve.pipeline.outbox in the transaction of the data they refer to.
A row is marked only after the broker took the message, so a crash in between sends it twice:
delivery is at least once, and the stages make a second delivery a no-op. `attempts` counts how
often a row was published.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from verisolve.db import session_scope
from verisolve.db.base import utcnow
from verisolve.pipeline.stages import rowcount
from verisolve.tables import OutboxMessage

logger = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The broker did not take a message (down, refused, not confirmed)."""


class Publisher(Protocol):
    """Sends one task message to a logical queue; raises PublishError when the broker fails."""

    def publish(self, task: str, queue: str, payload: dict[str, Any], message_id: str) -> None: ...


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
        for message in session.scalars(query).all():
            message_id = f"{message.dedupe_key}#{message.attempts + 1}"
            try:
                publisher.publish(message.task, message.queue, dict(message.payload), message_id)
            except PublishError as exc:
                # The broker is down: keep the rest for the next round, commit what went.
                logger.warning("outbox: %s not published: %s", message.dedupe_key, exc)
                break
            session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.id == message.id)
                .values(sent_at=utcnow(), attempts=OutboxMessage.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            sent += 1
    return sent


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
