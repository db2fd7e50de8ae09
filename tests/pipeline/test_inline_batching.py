"""The inline executor streams a job's waiting problems through one batch generator."""

from __future__ import annotations

import sqlalchemy as sa
from doubles import BatchingGenerator, ScriptedScorer

from jobtools import make_job as new_job
from jobtools import spec
from verisolve.db import session_scope
from verisolve.executors.inline import InlineExecutor
from verisolve.pipeline.stages import generate_problem
from verisolve.problems import ProblemIn
from verisolve.tables import Candidate, Job, JobStatus, Problem, ProblemStatus

PROBLEMS = [
    ProblemIn(f"p{i}", f"What is {i}+{i}?", str(2 * i), str(2 * i), i + 1) for i in range(5)
]
ANSWERS = {p.question: [str(2 * i)] for i, p in enumerate(PROBLEMS)}


def statuses(engine: sa.Engine, job_id: int) -> dict[str, str]:
    with session_scope(engine) as session:
        rows = session.execute(
            sa.select(Problem.external_id, Problem.status).where(Problem.job_id == job_id)
        )
        return {ext: str(status) for ext, status in rows}


def make_job(engine: sa.Engine) -> int:
    with session_scope(engine) as session:
        job = new_job(session, spec("g", n_samples=2), PROBLEMS)
        session.flush()
        return job.id


def test_every_problem_is_committed_as_the_stream_hands_it_back(engine: sa.Engine) -> None:
    job_id = make_job(engine)
    seen: list[dict[str, str]] = []
    gen = BatchingGenerator(ANSWERS, between=lambda _: seen.append(statuses(engine, job_id)))
    InlineExecutor(engine, lambda _: gen, lambda _: ScriptedScorer({})).run(job_id)
    assert gen.batches == [["p0", "p1", "p2", "p3", "p4"]], "one stream for the whole job"
    # The last problem came back first and was done (committed, aggregated) before the next one.
    assert seen[0]["p4"] == ProblemStatus.DONE
    assert all(seen[0][f"p{i}"] == ProblemStatus.PENDING for i in range(4))
    with session_scope(engine) as session:
        job = session.get_one(Job, job_id)
        assert job.status == JobStatus.DONE
        assert session.scalar(sa.select(sa.func.count()).select_from(Candidate)) == 10


def test_problems_already_generated_are_not_generated_again(engine: sa.Engine) -> None:
    job_id = make_job(engine)
    executor = InlineExecutor(engine, lambda _: gen, lambda _: ScriptedScorer({}))
    gen = BatchingGenerator(ANSWERS)
    executor.remaining(job_id)  # starts the job
    with session_scope(engine) as session:
        first = session.scalars(
            sa.select(Problem.id).where(Problem.job_id == job_id).order_by(Problem.id)
        ).first()
        assert first is not None
        generate_problem(session, first, lambda _: gen)
    executor.run(job_id)
    assert gen.batches == [["p1", "p2", "p3", "p4"]]
    assert statuses(engine, job_id) == dict.fromkeys(statuses(engine, job_id), ProblemStatus.DONE)
