"""The relay loop (`verisolve relay`): drain the outbox, reconcile, prune; until stopped.

Tasks publish their own next step right after they commit (the fast path); this loop sends what
they could not (the broker was down, the worker died between commit and publish) and the steps
written by `verisolve submit` and `resume`. Several relays may run: they take disjoint rows
(`SKIP LOCKED`) and their reconcilers' writes are guarded. One is enough.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from verisolve.executors.outbox import Publisher, prune_sent, relay_once
from verisolve.executors.reconciler import reconcile
from verisolve.pipeline.routes import QueueName

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayTimings:
    """How often the loop does what (seconds)."""

    poll: float = 0.5
    reconcile_every: float = 30.0
    stale_after: float = 3900.0  # above the longest task (celery_app.LONGEST_TASK_S)
    prune_after: float = 86400.0
    batch: int = 100


def busy_queues(ready_messages: Callable[[str], int | None]) -> set[str]:
    """Queues that still hold messages (or cannot tell): their stalls wait until they drain."""
    busy = set()
    for queue in QueueName:
        count = ready_messages(queue.value)
        if count is None or count > 0:
            busy.add(queue.value)
    return busy


def relay_round(engine: sa.Engine, publisher: Publisher, batch: int) -> int:
    """Publish until the outbox is empty or the broker refuses; returns how many went."""
    total = 0
    while True:
        sent = relay_once(engine, publisher, batch=batch)
        total += sent
        if sent < batch:
            return total


def run_relay(
    engine: sa.Engine,
    publisher: Publisher,
    ready_messages: Callable[[str], int | None],
    stop: threading.Event,
    timings: RelayTimings | None = None,
) -> None:
    """Loop until `stop` is set; a database that is down is waited for, not fatal."""
    timings = timings or RelayTimings()
    next_reconcile = 0.0
    while not stop.is_set():
        try:
            relay_round(engine, publisher, timings.batch)
            if time.monotonic() >= next_reconcile:
                report = reconcile(
                    engine, timings.stale_after, busy_queues=busy_queues(ready_messages)
                )
                if report.resent or report.failed_jobs or report.finalized:
                    logger.info("reconciler: %s", report)
                prune_sent(engine, timings.prune_after)
                next_reconcile = time.monotonic() + timings.reconcile_every
        except sa.exc.OperationalError as exc:
            logger.warning("relay: database unavailable, retrying: %s", exc.orig)
        stop.wait(timings.poll)
