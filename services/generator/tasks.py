"""Generator tasks: thin adapters over the pipeline's generate stage."""

from __future__ import annotations

from verisolve.executors.celery_app import app
from verisolve.executors.celery_worker import generate_chunk
from verisolve.pipeline.routes import TaskName


def generate(problem_id: int | None = None, problem_ids: list[int] | None = None) -> None:
    """Sample and store the candidates of a problem, or of a chunk of problems batched together.

    Each problem commits with its scoring (or aggregation) step as soon as it completes.
    """
    generate_chunk([problem_id] if problem_id is not None else problem_ids or [])


app.task(name=TaskName.GENERATE.value)(generate)
