"""The outbox: messages commit with the data, go out once, and can be sent again on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from jobtools import make_job, spec
from verisolve.db import session_scope
from verisolve.executors.outbox import PublishError, prune_sent, relay_once
from verisolve.pipeline.outbox import enqueue, enqueue_many, unsent_count
from verisolve.pipeline.stages import NextStep
from verisolve.problems import ProblemIn
from verisolve.settings import get_settings
from verisolve.tables import OutboxMessage


@pytest.fixture
def engine(own_engine: sa.Engine) -> sa.Engine:
    """This module's own database: these tests commit."""
    return own_engine


class RecordingPublisher:
    """Keeps what it was given; refuses every message after `fail_after` of them."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[str, str, dict[str, Any], str]] = []
        self.fail_after = fail_after

    def publish(self, task: str, queue: str, payload: dict[str, Any], message_id: str) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise PublishError("broker down")
        self.sent.append((task, queue, payload, message_id))


@pytest.fixture
def outbox(engine: sa.Engine) -> Iterator[sa.Engine]:
    """The test database with an empty outbox, emptied again afterwards."""
    with session_scope(engine) as session:
        session.execute(sa.delete(OutboxMessage))
    yield engine
    with session_scope(engine) as session:
        session.execute(sa.delete(OutboxMessage))


def rows(engine: sa.Engine) -> list[OutboxMessage]:
    with session_scope(engine) as session:
        return list(session.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id)))


@pytest.mark.parametrize(
    ("step", "task", "queue", "payload"),
    [
        (NextStep("generate", 7), "verisolve.generate", "generate", {"problem_id": 7}),
        (NextStep("score", 7), "verisolve.score", "verify", {"problem_id": 7}),
        (NextStep("aggregate", 7), "verisolve.aggregate", "aggregate", {"problem_id": 7}),
        (NextStep("finalize", 3), "verisolve.finalize", "aggregate", {"job_id": 3}),
    ],
)
def test_a_step_becomes_one_message_for_its_queue(
    session: Session, step: NextStep, task: str, queue: str, payload: dict[str, int]
) -> None:
    assert enqueue(session, step) == f"{step.stage}:{step.id}"
    enqueue(session, (step.stage, step.id))  # the same step again: still one message
    [message] = session.scalars(
        sa.select(OutboxMessage).where(OutboxMessage.dedupe_key == f"{step.stage}:{step.id}")
    ).all()
    assert (message.task, message.queue, message.payload) == (task, queue, payload)
    assert message.sent_at is None


def test_a_rolled_back_transaction_sends_nothing(outbox: sa.Engine) -> None:
    def failing_stage() -> None:
        with session_scope(outbox) as session:
            enqueue(session, NextStep("generate", 1))
            raise RuntimeError("the stage failed")

    with pytest.raises(RuntimeError):
        failing_stage()
    assert rows(outbox) == []


def test_relay_publishes_each_message_once_in_order(
    outbox: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERISOLVE_GENERATE_CHUNK", "1")
    get_settings.cache_clear()
    with session_scope(outbox) as session:
        enqueue_many(session, [NextStep("generate", i) for i in (3, 1, 2)])
    publisher = RecordingPublisher()
    assert relay_once(outbox, publisher) == 3
    assert relay_once(outbox, publisher) == 0
    assert [m[3] for m in publisher.sent] == ["generate:3#1", "generate:1#1", "generate:2#1"]
    assert all(r.sent_at is not None and r.attempts == 1 for r in rows(outbox))


def test_consecutive_generate_rows_go_out_as_chunks(
    outbox: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERISOLVE_GENERATE_CHUNK", "2")
    get_settings.cache_clear()
    steps = [NextStep("generate", i) for i in (5, 6, 7)] + [NextStep("score", 1)]
    with session_scope(outbox) as session:
        enqueue_many(session, [*steps, NextStep("generate", 8)])
    publisher = RecordingPublisher()
    assert relay_once(outbox, publisher) == 5
    assert [(m[0], m[2], m[3]) for m in publisher.sent] == [
        ("verisolve.generate", {"problem_ids": [5, 6]}, "generate:5+1#1"),
        ("verisolve.generate", {"problem_id": 7}, "generate:7#1"),
        ("verisolve.score", {"problem_id": 1}, "score:1#1"),
        ("verisolve.generate", {"problem_id": 8}, "generate:8#1"),
    ]
    # Rows stay per problem: each is marked sent, and each can be sent again on its own.
    assert all(r.sent_at is not None and r.attempts == 1 for r in rows(outbox))
    with session_scope(outbox) as session:
        enqueue(session, NextStep("generate", 6), resend=True)
    assert relay_once(outbox, publisher) == 1
    assert publisher.sent[-1][2:] == ({"problem_id": 6}, "generate:6#2")


def test_generate_chunks_close_when_their_samples_fill_the_batch(
    outbox: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERISOLVE_GENERATE_CHUNK", "3")
    monkeypatch.setenv("VERISOLVE_GENERATE_CHUNK_CANDIDATES", "32")
    get_settings.cache_clear()
    questions = [ProblemIn(f"p{i}", f"What is {i}+1?", None, None, i + 1) for i in range(4)]
    with session_scope(outbox) as session:
        jobs = [make_job(session, spec("g", n_samples=n), questions) for n in (16, 64, 4)]
        session.flush()
        ids = [sorted(p.id for p in job.problems) for job in jobs]
        session.execute(sa.delete(OutboxMessage))
        enqueue_many(session, [NextStep("generate", i) for job_ids in ids for i in job_ids])
    publisher = RecordingPublisher()
    assert relay_once(outbox, publisher) == 12
    n16, n64, n4 = ids
    # N = 16: two problems hold 32 candidates; N = 64: one does; N = 4: three problems (the most
    # a chunk takes here) hold 12, so the fourth starts a chunk of its own.
    chunks = [m[2].get("problem_ids", [m[2].get("problem_id")]) for m in publisher.sent]
    assert chunks == [n16[:2], n16[2:], *([i] for i in n64), n4[:3], n4[3:]]


def test_a_broker_failure_keeps_the_rest_for_later(outbox: sa.Engine) -> None:
    with session_scope(outbox) as session:
        enqueue_many(session, [NextStep("score", i) for i in range(1, 5)])
    assert relay_once(outbox, RecordingPublisher(fail_after=2)) == 2
    with session_scope(outbox) as session:
        assert unsent_count(session) == 2
    later = RecordingPublisher()
    assert relay_once(outbox, later, batch=10) == 2
    assert [m[2]["problem_id"] for m in later.sent] == [3, 4]


def test_batch_and_keys_limit_a_round(outbox: sa.Engine) -> None:
    with session_scope(outbox) as session:
        keys = enqueue_many(session, [NextStep("aggregate", i) for i in range(1, 6)])
    publisher = RecordingPublisher()
    assert relay_once(outbox, publisher, keys=[keys[3]]) == 1
    assert relay_once(outbox, publisher, batch=2) == 2
    assert [m[2]["problem_id"] for m in publisher.sent] == [4, 1, 2]


def test_resend_marks_a_sent_message_unsent_again(outbox: sa.Engine) -> None:
    with session_scope(outbox) as session:
        enqueue(session, NextStep("generate", 9))
    publisher = RecordingPublisher()
    relay_once(outbox, publisher)
    with session_scope(outbox) as session:
        enqueue(session, NextStep("generate", 9))  # a redelivered stage: no new message
    assert relay_once(outbox, publisher) == 0
    with session_scope(outbox) as session:
        enqueue(session, NextStep("generate", 9), resend=True)
        enqueue(session, NextStep("generate", 9), resend=True)  # still one pending message
    assert relay_once(outbox, publisher) == 1
    assert [m[3] for m in publisher.sent] == ["generate:9#1", "generate:9#2"]
    assert len(rows(outbox)) == 1


def test_prune_deletes_only_old_sent_messages(outbox: sa.Engine) -> None:
    with session_scope(outbox) as session:
        enqueue_many(session, [NextStep("generate", 1), NextStep("generate", 2)])
    relay_once(outbox, RecordingPublisher(), keys=["generate:1"])
    assert prune_sent(outbox, older_than_s=3600) == 0
    assert prune_sent(outbox, older_than_s=-1) == 1
    assert [r.dedupe_key for r in rows(outbox)] == ["generate:2"]


@pytest.mark.postgres
def test_relays_side_by_side_skip_each_others_rows(postgres_url: str) -> None:
    from verisolve.db import create_engine

    engine = create_engine(postgres_url)
    try:
        with session_scope(engine) as session:
            session.execute(sa.delete(OutboxMessage))
            enqueue_many(session, [NextStep("generate", 1), NextStep("generate", 2)])
        with session_scope(engine) as holder:
            # Another relay holds the first row while it publishes.
            holder.execute(
                sa.select(OutboxMessage)
                .where(OutboxMessage.dedupe_key == "generate:1")
                .with_for_update()
            ).one()
            publisher = RecordingPublisher()
            assert relay_once(engine, publisher) == 1
            assert [m[3] for m in publisher.sent] == ["generate:2#1"]
        with session_scope(engine) as session:
            session.execute(sa.delete(OutboxMessage))
    finally:
        engine.dispose()
