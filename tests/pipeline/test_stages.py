"""The stages move problems through the pipeline exactly once, and compute the right answers."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from doubles import ScriptedGenerator, ScriptedScorer
from sqlalchemy.orm import Session

from jobtools import make_job as new_job
from jobtools import spec
from verisolve.pipeline.jobs import JobError, cancel_job, mark_running
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.stages import (
    NextStep,
    aggregate_problem,
    finalize_job,
    generate_problem,
    score_problem,
)
from verisolve.problems import ProblemIn
from verisolve.tables import Candidate, Job, JobStatus, Problem, ProblemStatus, Selection

PROBLEMS = [
    ProblemIn("a", "What is 2+2?", "4", "4", 1),
    ProblemIn("b", "What is 3*3?", "9", "9", 2),
    ProblemIn("c", "No gold here", None, None, 3),
]
# Majority picks the wrong 5 on "a"; the verifier prefers the right 4.
ANSWERS = {"What is 2+2?": ["5", "5", "4"], "What is 3*3?": ["9"], "No gold here": ["1", "x"]}
SCORES = {"4": 0.9, "5": 0.2, "9": 0.8}


def make_job(session: Session, verifier: str | None = "v") -> Job:
    job = new_job(session, spec("g", verifier, n_samples=3), PROBLEMS)
    mark_running(session, job)
    return job


def problem(session: Session, job: Job, external_id: str) -> Problem:
    return session.scalars(
        sa.select(Problem).where(Problem.job_id == job.id, Problem.external_id == external_id)
    ).one()


def run_all(session: Session, job: Job, gen: ScriptedGenerator, scorer: ScriptedScorer) -> None:
    for p in sorted(job.problems, key=lambda p: p.id):
        step = generate_problem(session, p.id, lambda _: gen)
        while step is not None and step.stage != "finalize":
            if step.stage == "score":
                step = score_problem(session, step.id, lambda _: scorer)
            else:
                step = aggregate_problem(session, step.id)
    assert finalize_job(session, job.id)


def test_job_runs_through_every_stage(session: Session) -> None:
    job = make_job(session)
    run_all(session, job, ScriptedGenerator(ANSWERS), ScriptedScorer(SCORES))
    session.refresh(job)
    assert job.status == JobStatus.DONE
    assert job.n_done == 3
    chosen = {
        (s.problem.external_id, s.strategy): s.answer
        for s in session.scalars(sa.select(Selection).join(Problem).where(Problem.job_id == job.id))
    }
    assert chosen[("a", "majority")] == "5"
    assert chosen[("a", "verifier")] == "4"
    assert chosen[("a", "first")] == "5"
    assert chosen[("c", "majority")] == "1"  # "x" does not parse and never wins
    assert job.metrics is not None
    assert job.metrics["strategies"]["verifier"] == 1.0
    assert job.metrics["strategies"]["majority"] == 0.5
    assert job.metrics["n_problems"] == 3


def test_without_a_verifier_scoring_is_skipped(session: Session) -> None:
    job = make_job(session, verifier=None)
    p = problem(session, job, "a")
    assert generate_problem(session, p.id, lambda _: ScriptedGenerator(ANSWERS)) == NextStep(
        "aggregate", p.id
    )
    assert p.status == ProblemStatus.SCORED
    assert job.strategy == "majority"


def test_a_redelivered_stage_is_a_no_op(session: Session) -> None:
    job = make_job(session)
    gen, scorer = ScriptedGenerator(ANSWERS), ScriptedScorer(SCORES)
    p = problem(session, job, "b")
    assert generate_problem(session, p.id, lambda _: gen) == NextStep("score", p.id)
    assert generate_problem(session, p.id, lambda _: gen) is None
    assert score_problem(session, p.id, lambda _: scorer) == NextStep("aggregate", p.id)
    assert score_problem(session, p.id, lambda _: scorer) is None
    assert aggregate_problem(session, p.id) is None  # two problems remain: no finalize yet
    assert p.status == ProblemStatus.DONE
    assert aggregate_problem(session, p.id) is None
    assert len(gen.calls) == 1
    assert scorer.calls == 1
    count = session.scalar(sa.select(sa.func.count()).where(Candidate.problem_id == p.id))
    assert count == 3
    session.refresh(job)
    assert job.n_done == 1


def test_finalize_waits_for_every_problem(session: Session) -> None:
    job = make_job(session)
    assert not finalize_job(session, job.id)
    assert job.status == JobStatus.RUNNING


def test_a_cancelled_job_stops_its_stages(session: Session) -> None:
    job = make_job(session)
    cancel_job(session, job)
    assert job.status == JobStatus.CANCELLED
    p = problem(session, job, "a")
    assert generate_problem(session, p.id, lambda _: ScriptedGenerator(ANSWERS)) is None
    assert p.status == ProblemStatus.PENDING


def test_problems_are_added_once_by_id(session: Session) -> None:
    job = new_job(session, spec("g"), PROBLEMS[:2])
    from verisolve.pipeline import add_problems

    assert add_problems(session, job, PROBLEMS, JobLimits()) == 1
    assert job.n_problems == 3


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"n_samples": 0}, "n_samples must be at least 1"),
        ({"top_p": 0}, "top_p"),
        ({"strategy": "verifier"}, "needs a verifier"),
        ({"strategy": "nope"}, "unknown strategy"),
        ({"vote_k": 0}, "vote_k"),
    ],
)
def test_bad_job_parameters_are_refused(
    session: Session, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(JobError, match=message):
        new_job(session, spec("g", **parameters), PROBLEMS)
