"""The relay loop sends what the outbox holds and stops when told."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from verisolve.db import session_scope
from verisolve.executors.relay import RelayTimings, run_relay
from verisolve.pipeline.outbox import enqueue_many
from verisolve.pipeline.stages import NextStep
from verisolve.tables import OutboxMessage


@pytest.fixture
def engine(own_engine: sa.Engine) -> sa.Engine:
    """This module's own database: these tests commit."""
    return own_engine


class CountingPublisher:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.all_sent = threading.Event()

    def publish(self, task: str, queue: str, payload: dict[str, Any], message_id: str) -> None:
        # Generate rows go out in chunks of problems: count the problems.
        ids = payload["problem_ids"] if "problem_ids" in payload else [payload["problem_id"]]
        self.sent += [f"generate:{i}" for i in ids]
        if len(self.sent) >= 250:
            self.all_sent.set()


def test_the_loop_drains_the_outbox_in_batches_until_stopped(engine: sa.Engine) -> None:
    with session_scope(engine) as session:
        session.execute(sa.delete(OutboxMessage))
        enqueue_many(session, [NextStep("generate", i) for i in range(1, 251)])
    publisher, stop = CountingPublisher(), threading.Event()
    timings = RelayTimings(poll=0.05, reconcile_every=60, batch=100)
    loop = threading.Thread(target=run_relay, args=(engine, publisher, lambda q: 0, stop, timings))
    loop.start()
    try:
        assert publisher.all_sent.wait(timeout=20)
    finally:
        stop.set()
        loop.join(timeout=10)
    assert not loop.is_alive()
    assert len(set(publisher.sent)) == 250
    with session_scope(engine) as session:
        unsent = session.scalar(sa.select(sa.func.count()).where(OutboxMessage.sent_at.is_(None)))
        session.execute(sa.delete(OutboxMessage))
    assert unsent == 0
