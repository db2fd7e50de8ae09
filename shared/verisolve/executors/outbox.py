"""The transactional outbox, sending side: `relay_once` publishes unsent rows and marks them sent.

The rows are written by verisolve.pipeline.outbox in the transaction of the data they refer to.
A row is marked only after the broker took the message, so a crash in between sends it twice:
delivery is at least once, and the stages make a second delivery a no-op. `attempts` counts how
often a row was published.

Rows stay one per problem, but consecutive generate rows go out as one task over a chunk of
problems (`generate_chunk`), so a worker batches their rows together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from verisolve.db import session_scope
from verisolve.db.base import utcnow
from verisolve.pipeline.routes import CHUNK_ARG, ROUTES, TaskName
from verisolve.pipeline.stages import rowcount
from verisolve.settings import get_settings
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
            ids = [message.id for message in group]
            session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids))
                .values(sent_at=utcnow(), attempts=OutboxMessage.attempts + 1)
                .execution_options(synchronize_session=False)
            )
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
