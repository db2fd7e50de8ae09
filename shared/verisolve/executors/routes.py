"""Where each stage runs on Celery: its task name, its queue and its argument (no Celery import)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from verisolve.pipeline.stages import NextStep, Stage


class QueueName(StrEnum):
    """The queues; long model tasks get their own, so a slow stage never blocks a cheap one."""

    GENERATE = "generate"
    VERIFY = "verify"
    AGGREGATE = "aggregate"


class TaskName(StrEnum):
    """Explicit task names: the contract between the outbox rows and the workers."""

    GENERATE = "verisolve.generate"
    SCORE = "verisolve.score"
    AGGREGATE = "verisolve.aggregate"
    FINALIZE = "verisolve.finalize"


@dataclass(frozen=True)
class Route:
    """A stage's task, its queue, and the keyword its row id travels under."""

    task: TaskName
    queue: QueueName
    arg: str


ROUTES: dict[Stage, Route] = {
    "generate": Route(TaskName.GENERATE, QueueName.GENERATE, "problem_id"),
    "score": Route(TaskName.SCORE, QueueName.VERIFY, "problem_id"),
    "aggregate": Route(TaskName.AGGREGATE, QueueName.AGGREGATE, "problem_id"),
    "finalize": Route(TaskName.FINALIZE, QueueName.AGGREGATE, "job_id"),
}


# The keyword of a generate task over a chunk of problems (the relay groups generate rows).
CHUNK_ARG = "problem_ids"


def physical_queue(queue: str, prefix: str) -> str:
    """The broker's name for a logical queue in a deployment."""
    return f"{prefix}{queue}"


def dedupe_key(step: NextStep) -> str:
    """The outbox key of a step: one row per stage and row, reused when re-enqueued."""
    return f"{step.stage}:{step.id}"
