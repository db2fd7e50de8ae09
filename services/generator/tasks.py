"""Generator tasks: thin adapters over the pipeline's generate stage."""

from __future__ import annotations

from verisolve.executors.celery_app import app
from verisolve.executors.celery_worker import stage_transaction
from verisolve.executors.routes import TaskName
from verisolve.pipeline.stages import generate_problem


def generate(problem_id: int) -> None:
    """Sample and store a problem's candidates; enqueue its scoring (or aggregation)."""
    with stage_transaction(problem_id) as run:
        run.next = generate_problem(run.session, problem_id, run.generator(problem_id))


app.task(name=TaskName.GENERATE.value)(generate)
