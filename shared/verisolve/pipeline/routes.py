"""Where each stage runs: its task name, its queue and its argument; the stage a problem waits for.

No Celery import: the outbox rows name tasks and queues, and the workers consume them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from verisolve.pipeline.stages import NextStep, Stage
from verisolve.tables import Problem, ProblemStatus


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

# The stage a problem waits for, by its status (done and failed problems wait for none).
STAGE_OF: dict[str, Stage] = {
    ProblemStatus.PENDING: "generate",
    ProblemStatus.GENERATED: "score",
    ProblemStatus.SCORED: "aggregate",
}


def step_for(problem: Problem) -> NextStep | None:
    """The step a problem waits for (None when it is done or failed)."""
    stage = STAGE_OF.get(ProblemStatus(problem.status))
    return NextStep(stage, problem.id) if stage else None


# The keyword of a generate task over a chunk of problems (the relay groups generate rows).
CHUNK_ARG = "problem_ids"


def physical_queue(queue: str, prefix: str) -> str:
    """The broker's name for a logical queue in a deployment."""
    return f"{prefix}{queue}"


def dedupe_key(step: NextStep) -> str:
    """The outbox key of a step: one row per stage and row, reused when re-enqueued."""
    return f"{step.stage}:{step.id}"
