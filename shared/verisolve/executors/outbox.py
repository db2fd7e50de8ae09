"""The transactional outbox, sending side: `relay_once` publishes unsent rows and marks them sent.

The rows are written by verisolve.pipeline.outbox in the transaction of the data they refer to.
A row is marked only after the broker took the message, so a crash in between sends it twice:
delivery is at least once, and the stages make a second delivery a no-op. `attempts` counts how
often a row was published.

Rows stay one per problem, but consecutive generate rows go out as one task over a chunk of
problems, so a worker batches their rows together: a chunk closes once its problems' samples
reach `generate_chunk_candidates`, or at `generate_chunk` problems.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.db import session_scope
from verisolve.db.base import utcnow
from verisolve.pipeline.routes import CHUNK_ARG, ROUTES, TaskName
from verisolve.pipeline.stages import rowcount
from verisolve.settings import get_settings
from verisolve.tables import Job, OutboxMessage, Problem

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
    settings = get_settings()
    with session_scope(engine) as session:
        messages = session.scalars(query).all()
        samples = _samples_per_problem(session, messages)
        size, candidates = settings.generate_chunk, settings.generate_chunk_candidates
        for group in chunked(messages, size, candidates, samples=samples):
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


def chunked(
    messages: Sequence[OutboxMessage],
    size: int,
    candidates: int | None = None,
    *,
    samples: Mapping[int, int] | None = None,
) -> list[list[OutboxMessage]]:
    """Messages in order, consecutive generate rows grouped into chunks (one task, one batch).

    A chunk closes at `size` problems, or once its problems' samples (`samples`, by problem id;
    1 for a problem not in it) reach `candidates`.
    """
    samples = samples or {}
    groups: list[list[OutboxMessage]] = []
    held = 0
    for message in messages:
        last = groups[-1] if groups else None
        is_generate = message.task == TaskName.GENERATE.value
        count = samples.get(_problem_id(message), 1) if is_generate else 0
        if (
            last is not None
            and is_generate
            and last[0].task == message.task
            and len(last) < size
            and (candidates is None or held < candidates)
        ):
            last.append(message)
            held += count
        else:
            groups.append([message])
            held = count
    return groups


def _problem_id(message: OutboxMessage) -> int:
    return int(message.payload[ROUTES["generate"].arg])


def _samples_per_problem(session: Session, messages: Sequence[OutboxMessage]) -> dict[int, int]:
    """The samples per problem (its job's N) of the generate messages' problems, by problem id."""
    ids = [_problem_id(m) for m in messages if m.task == TaskName.GENERATE.value]
    if len(ids) < 2:
        return {}  # nothing to chunk (the fast path after each stage sends one message)
    query = sa.select(Problem.id, Job.n_samples).join(Job).where(Problem.id.in_(ids))
    return {problem_id: n for problem_id, n in session.execute(query)}


def _payload(group: Sequence[OutboxMessage]) -> dict[str, Any]:
    """One message's own payload, or a chunk's problem ids."""
    if len(group) == 1:
        return dict(group[0].payload)
    return {CHUNK_ARG: [_problem_id(m) for m in group]}


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
