"""Generator tasks: thin adapters over the pipeline's generate stage."""

from __future__ import annotations

from verisolve.executors.celery_app import app
from verisolve.executors.celery_worker import generator_named, stage_transaction
from verisolve.pipeline.routes import TaskName
from verisolve.pipeline.stages import generate_problem


def generate(problem_id: int) -> None:
    """Sample and store a problem's candidates; enqueue its scoring (or aggregation)."""
    with stage_transaction(problem_id) as run:
        run.next = generate_problem(run.session, problem_id, generator_named)


app.task(name=TaskName.GENERATE.value)(generate)
