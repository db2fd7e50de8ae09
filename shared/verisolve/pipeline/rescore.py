"""Rescoring a job with another verifier, without generating again."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.evaluation import EvaluationReport, evaluate
from verisolve.pipeline.jobs import JobError
from verisolve.pipeline.stages import (
    CandidateScorer,
    job_candidates,
    score_candidates,
    select_answers,
)
from verisolve.tables import Job, JobStatus, Problem, ProblemStatus


def problems_to_rescore(session: Session, job: Job) -> list[int]:
    """The job's problems that have candidates (generated or later)."""
    if job.status == JobStatus.RUNNING:
        raise JobError(f"job {job.id} is running; rescore it once it is done or cancelled")
    return list(
        session.scalars(
            sa.select(Problem.id)
            .where(Problem.job_id == job.id, Problem.status != ProblemStatus.PENDING)
            .order_by(Problem.id)
        )
    )


def rescore_problem(
    session: Session, problem_id: int, scorer: CandidateScorer, verifier: str, vote_k: int
) -> None:
    """New scores for a problem's candidates, and its selections computed again."""
    problem = session.get_one(Problem, problem_id)
    score_candidates(session, problem, scorer, verifier)
    if problem.status == ProblemStatus.DONE:
        select_answers(session, problem, vote_k)


def finish_rescore(session: Session, job: Job, verifier: str) -> EvaluationReport:
    """Record the job's new verifier and metrics."""
    report = evaluate(job_candidates(session, job.id), k=job.vote_k, seed=job.seed)
    job.verifier = verifier
    if job.status == JobStatus.DONE:
        job.metrics = report.to_json()
    session.flush()
    return report
