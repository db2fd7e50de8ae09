"""The inline executor: every stage of a job in this process.

All of a job's problems that wait for candidates stream through one generation engine, whose
batch mixes rows of many problems; each problem's candidates are committed as soon as its last
row ends, and its later stages run right then. Each stage commits on its own, so a run that is
interrupted resumes where it stopped: problems keep their status, and the next run picks up each
one at the stage it waits for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import sqlalchemy as sa

from verisolve.db import session_scope
from verisolve.pipeline.jobs import mark_running
from verisolve.pipeline.stages import (
    GeneratorLookup,
    NextStep,
    SamplingRequest,
    ScorerLookup,
    Stage,
    aggregate_problem,
    finalize_job,
    generate_problem,
    generate_stream,
    pending_request,
    score_problem,
    store_candidates,
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
        remaining = self.remaining(job_id)
        with session_scope(self._engine) as session:
            generator_name = session.get_one(Job, job_id).generator
            waiting = set(
                session.scalars(
                    sa.select(Problem.id).where(
                        Problem.job_id == job_id, Problem.status == ProblemStatus.PENDING
                    )
                )
            )
        for problem_id in (p for p in remaining if p not in waiting):
            self.run_problem(problem_id)
            if on_problem is not None:
                on_problem(self._progress(problem_id))
        pending = [p for p in remaining if p in waiting]
        generator = self._generator(generator_name)
        for problem_id, candidates in generate_stream(generator, self._requests(pending)):
            with self._timed("generate"), session_scope(self._engine) as session:
                step = store_candidates(session, problem_id, candidates)
            self._follow(step)
            if on_problem is not None:
                on_problem(self._progress(problem_id))
        with self._timed("finalize"), session_scope(self._engine) as session:
            finalize_job(session, job_id)

    def _requests(self, problem_ids: Iterable[int]) -> Iterator[tuple[int, SamplingRequest]]:
        """Each problem's request, read when the engine is ready for it; skipped if moved on."""
        for problem_id in problem_ids:
            with session_scope(self._engine) as session:
                request = pending_request(session, problem_id)
            if request is not None:
                yield problem_id, request

    def run_problem(self, problem_id: int) -> None:
        """Follow one problem through its stages, one transaction each."""
        with session_scope(self._engine) as session:
            status = ProblemStatus(session.get_one(Problem, problem_id).status)
        stage = {ProblemStatus.GENERATED: "score", ProblemStatus.SCORED: "aggregate"}
        self._follow(NextStep(stage.get(status, "generate"), problem_id))  # type: ignore[arg-type]

    def _follow(self, step: NextStep | None) -> None:
        """Run a problem's stages from this step on until it is done or waits for the job."""
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
