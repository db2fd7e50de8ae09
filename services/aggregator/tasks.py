"""Aggregator tasks: thin adapters over the pipeline's aggregate and finalize stages."""

from __future__ import annotations

from verisolve.executors.celery_app import app
from verisolve.executors.celery_worker import stage_transaction
from verisolve.pipeline.routes import TaskName
from verisolve.pipeline.stages import aggregate_problem, finalize_job


def aggregate(problem_id: int) -> None:
    """Select a problem's answers and count it done; enqueue the job's finalization last."""
    with stage_transaction(problem_id) as run:
        run.next = aggregate_problem(run.session, problem_id)


def finalize(job_id: int) -> None:
    """Compute a finished job's metrics and mark it done."""
    with stage_transaction() as run:
        finalize_job(run.session, job_id)


app.task(name=TaskName.AGGREGATE.value)(aggregate)
app.task(name=TaskName.FINALIZE.value)(finalize)
