"""Verifier tasks: thin adapters over the pipeline's score stage."""

from __future__ import annotations

from verisolve.executors.celery_app import app
from verisolve.executors.celery_worker import scorer_named, stage_transaction
from verisolve.pipeline.routes import TaskName
from verisolve.pipeline.stages import score_problem


def score(problem_id: int) -> None:
    """Score a problem's candidates with its job's verifier; enqueue its aggregation."""
    with stage_transaction(problem_id) as run:
        run.next = score_problem(run.session, problem_id, scorer_named)


app.task(name=TaskName.SCORE.value)(score)
