"""The inline executor: every stage of a job in this process, one problem after another.

Each stage commits on its own, so a run that is interrupted resumes where it stopped: problems
keep their status, and the next run picks up each one at the stage it waits for.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import sqlalchemy as sa

from verisolve.db import session_scope
from verisolve.pipeline.jobs import mark_running
from verisolve.pipeline.stages import (
    GeneratorLookup,
    NextStep,
    ScorerLookup,
    Stage,
    aggregate_problem,
    finalize_job,
    generate_problem,
    score_problem,
)
from verisolve.tables import Candidate, Job, Problem, ProblemStatus


@dataclass(frozen=True)
class ProblemDone:
    """Progress after one problem: what it generated."""

    problem_id: int
    candidates: int
    tokens: int


class InlineExecutor:
    """Runs a job's stages in this process against one database."""

    def __init__(
        self,
        engine: sa.Engine,
        generator: GeneratorLookup,
        scorer: ScorerLookup,
        stage_timer: Callable[[Stage], AbstractContextManager[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._generator = generator
        self._scorer = scorer
        # Wraps each stage (metrics, in `verisolve solve`); by default nothing is recorded.
        self._timed = stage_timer or (lambda _stage: nullcontext())

    def remaining(self, job_id: int) -> list[int]:
        """Start the job (if needed) and list its problems that are not done."""
        with session_scope(self._engine) as session:
            job = session.get_one(Job, job_id)
            mark_running(session, job)
            return list(
                session.scalars(
                    sa.select(Problem.id)
                    .where(Problem.job_id == job_id, Problem.status != ProblemStatus.DONE)
                    .order_by(Problem.id)
                )
            )

    def run(self, job_id: int, on_problem: Callable[[ProblemDone], None] | None = None) -> None:
        """Run every stage of every remaining problem, then finalize the job."""
        for problem_id in self.remaining(job_id):
            self.run_problem(problem_id)
            if on_problem is not None:
                on_problem(self._progress(problem_id))
        with self._timed("finalize"), session_scope(self._engine) as session:
            finalize_job(session, job_id)

    def run_problem(self, problem_id: int) -> None:
        """Follow one problem through its stages, one transaction each."""
        step: NextStep | None = NextStep("generate", problem_id)
        with session_scope(self._engine) as session:
            status = ProblemStatus(session.get_one(Problem, problem_id).status)
        if status == ProblemStatus.GENERATED:
            step = NextStep("score", problem_id)
        elif status == ProblemStatus.SCORED:
            step = NextStep("aggregate", problem_id)
        while step is not None and step.stage != "finalize":
            with self._timed(step.stage), session_scope(self._engine) as session:
                if step.stage == "generate":
                    step = generate_problem(session, step.id, self._generator)
                elif step.stage == "score":
                    step = score_problem(session, step.id, self._scorer)
                else:
                    step = aggregate_problem(session, step.id)

    def _progress(self, problem_id: int) -> ProblemDone:
        with session_scope(self._engine) as session:
            count, tokens = session.execute(
                sa.select(
                    sa.func.count(), sa.func.coalesce(sa.func.sum(Candidate.n_tokens), 0)
                ).where(Candidate.problem_id == problem_id)
            ).one()
        return ProblemDone(problem_id, int(count), int(tokens))
