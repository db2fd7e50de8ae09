"""The four stages: generate, score, aggregate, finalize. Each is idempotent.

A stage reads the problem's status, does its work, and moves the problem on with one guarded
UPDATE (`... WHERE status = <expected>`), so exactly one transaction wins when a message is
delivered twice. A stage returns the step that should follow; the executor runs it (inline) or
enqueues it through the outbox (Celery), in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, TypeVar, cast, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.answers import extract_answer, is_correct
from verisolve.db.base import utcnow
from verisolve.evaluation import EvalCandidate, ProblemCandidates, evaluate
from verisolve.inference.sampling import SamplingParams
from verisolve.pipeline.spec import JobSpec
from verisolve.selection import CandidateView, select_all
from verisolve.tables import Candidate, Job, JobStatus, Problem, ProblemStatus, Selection

Stage = Literal["generate", "score", "aggregate", "finalize"]


class StageConflictError(RuntimeError):
    """Another transaction moved the problem first; this one must roll back."""


@dataclass(frozen=True)
class NextStep:
    """The stage to run next and the row it runs on (a problem id, or a job id to finalize)."""

    stage: Stage
    id: int


@dataclass(frozen=True)
class GeneratedCandidate:
    """What a generator returns for one sample."""

    sample_index: int
    text: str
    n_tokens: int
    finish_reason: str
    calc_calls: int = 0
    calc_failures: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class SamplingRequest:
    """One problem's generation request: its question, its key, and its job's sampling."""

    question: str
    key: str  # the problem's identity in the random streams: the same in every job
    sampling: SamplingParams


class CandidateGenerator(Protocol):
    """Samples a problem's candidates (the ONNX engine, or a test double)."""

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]: ...


K = TypeVar("K")


@runtime_checkable
class BatchCandidateGenerator(CandidateGenerator, Protocol):
    """Samples many problems' candidates at once, handing each problem back as it completes."""

    def generate_many(
        self, requests: Iterable[tuple[K, SamplingRequest]]
    ) -> Iterator[tuple[K, Sequence[GeneratedCandidate]]]: ...


def generate_stream(
    generator: CandidateGenerator, requests: Iterable[tuple[K, SamplingRequest]]
) -> Iterator[tuple[K, Sequence[GeneratedCandidate]]]:
    """Each request's tag and candidates: batched when the generator can, else one by one."""
    if isinstance(generator, BatchCandidateGenerator):
        yield from generator.generate_many(requests)
        return
    for tag, request in requests:
        yield tag, generator.generate(request)


class CandidateScore(Protocol):
    """A verifier's verdict on one candidate."""

    @property
    def score(self) -> float: ...  # the probability that the candidate is correct

    @property
    def token_values(self) -> tuple[float, ...] | None: ...  # token-level verifiers only


class CandidateScorer(Protocol):
    """Scores candidates (the ONNX verifier, or a test double)."""

    def score(self, question: str, completions: Sequence[str]) -> Sequence[CandidateScore]: ...


# How both executors find a job's models: by registered name, the stage holding the name.
GeneratorLookup = Callable[[str], CandidateGenerator]
ScorerLookup = Callable[[str], CandidateScorer]


def rowcount(result: sa.Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched."""
    return int(cast(sa.CursorResult[Any], result).rowcount)


def _active(session: Session, problem_id: int, status: ProblemStatus) -> Problem | None:
    """The problem if it waits for this stage and its job still runs; None makes a no-op."""
    problem = session.get(Problem, problem_id)
    if problem is None or problem.status != status:
        return None
    return problem if problem.job.status == JobStatus.RUNNING else None


def _advance(session: Session, problem: Problem, old: ProblemStatus, **values: object) -> None:
    """Move a problem on, or raise StageConflictError when another transaction did it first."""
    result = session.execute(
        sa.update(Problem)
        .where(Problem.id == problem.id, Problem.status == old)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise StageConflictError(f"problem {problem.id} left status {old} in another transaction")
    session.refresh(problem)


def storable(candidate: GeneratedCandidate) -> GeneratedCandidate:
    """The candidate with NUL characters replaced: PostgreSQL text cannot hold them."""
    if "\x00" not in candidate.text:
        return candidate
    return replace(candidate, text=candidate.text.replace("\x00", "\ufffd"))


def sampling_request(job: Job, problem: Problem) -> SamplingRequest:
    """The request that generates a problem's candidates, reproducible from the job."""
    return SamplingRequest(problem.question, problem.external_id, JobSpec.of_job(job).sampling)


def generate_problem(
    session: Session, problem_id: int, generators: GeneratorLookup
) -> NextStep | None:
    """Sample and store a problem's candidates; next: score (or aggregate without a verifier)."""
    problem = _active(session, problem_id, ProblemStatus.PENDING)
    if problem is None:
        return None
    generator = generators(problem.job.generator)
    candidates = generator.generate(sampling_request(problem.job, problem))
    return store_candidates(session, problem_id, candidates)


def pending_request(session: Session, problem_id: int) -> SamplingRequest | None:
    """The sampling request of a problem that waits for its candidates; None when it does not."""
    problem = _active(session, problem_id, ProblemStatus.PENDING)
    return None if problem is None else sampling_request(problem.job, problem)


def store_candidates(
    session: Session, problem_id: int, candidates: Sequence[GeneratedCandidate]
) -> NextStep | None:
    """Store a problem's candidates and move it on; a no-op if it no longer waits for them."""
    problem = _active(session, problem_id, ProblemStatus.PENDING)
    if problem is None:
        return None
    job = problem.job
    outputs = [storable(c) for c in candidates]
    session.execute(
        sa.insert(Candidate),
        [
            {
                "problem_id": problem.id,
                "sample_index": c.sample_index,
                "text": c.text,
                "answer": extract_answer(c.text),
                "n_tokens": c.n_tokens,
                "finish_reason": c.finish_reason,
                "calc_calls": c.calc_calls,
                "calc_failures": c.calc_failures,
                "gen_seconds": c.seconds,
            }
            for c in outputs
        ],
    )
    if job.verifier:
        _advance(
            session,
            problem,
            ProblemStatus.PENDING,
            status=ProblemStatus.GENERATED,
            n_generated=len(outputs),
        )
        return NextStep("score", problem.id)
    _advance(
        session,
        problem,
        ProblemStatus.PENDING,
        status=ProblemStatus.SCORED,
        n_generated=len(outputs),
    )
    return NextStep("aggregate", problem.id)


def score_problem(session: Session, problem_id: int, scorers: ScorerLookup) -> NextStep | None:
    """Score a problem's candidates with the job's verifier; next: aggregate."""
    problem = _active(session, problem_id, ProblemStatus.GENERATED)
    if problem is None:
        return None
    verifier = problem.job.verifier or ""
    score_candidates(session, problem, scorers(verifier), verifier)
    _advance(
        session,
        problem,
        ProblemStatus.GENERATED,
        status=ProblemStatus.SCORED,
        n_scored=len(problem.candidates),
    )
    return NextStep("aggregate", problem.id)


def score_candidates(
    session: Session, problem: Problem, scorer: CandidateScorer, verifier: str
) -> None:
    """Write a verifier's scores on every candidate of a problem."""
    candidates = list(problem.candidates)
    scores = scorer.score(problem.question, [c.text for c in candidates])
    if len(scores) != len(candidates):
        raise ValueError(f"the verifier returned {len(scores)} scores for {len(candidates)}")
    session.execute(
        sa.update(Candidate).execution_options(synchronize_session=False),
        [
            {
                "id": c.id,
                "score": float(s.score),
                "token_scores": list(s.token_values) if s.token_values is not None else None,
                "verifier": verifier,
            }
            for c, s in zip(candidates, scores, strict=True)
        ],
    )
    session.expire(problem, ["candidates"])


def select_answers(session: Session, problem: Problem, vote_k: int) -> None:
    """(Re)write one selection per strategy the problem's candidates allow."""
    views = [CandidateView(c.sample_index, c.answer, c.score) for c in problem.candidates]
    session.execute(sa.delete(Selection).where(Selection.problem_id == problem.id))
    session.execute(
        sa.insert(Selection),
        [
            {
                "problem_id": problem.id,
                "strategy": strategy.value,
                "answer": result.answer,
                "sample_index": result.sample_index,
                "confidence": result.confidence,
                "correct": is_correct(result.answer, problem.gold) if problem.gold else None,
            }
            for strategy, result in select_all(views, k=vote_k).items()
        ],
    )


def aggregate_problem(session: Session, problem_id: int) -> NextStep | None:
    """Apply the selection strategies; count the problem done; next: finalize on the last one."""
    problem = _active(session, problem_id, ProblemStatus.SCORED)
    if problem is None:
        return None
    job = problem.job
    select_answers(session, problem, job.vote_k)
    _advance(session, problem, ProblemStatus.SCORED, status=ProblemStatus.DONE)
    session.execute(
        sa.update(Job)
        .where(Job.id == job.id)
        .values(n_done=Job.n_done + 1)
        .execution_options(synchronize_session=False)
    )
    session.refresh(job, ["n_done", "n_problems"])
    return NextStep("finalize", job.id) if job.n_done >= job.n_problems else None


def job_candidates(session: Session, job_id: int) -> list[ProblemCandidates]:
    """Every problem of a job with its candidates, in the form the evaluation takes."""
    rows = session.execute(
        sa.select(
            Problem.id,
            Problem.external_id,
            Problem.gold,
            Candidate.sample_index,
            Candidate.answer,
            Candidate.score,
            Candidate.calc_calls,
            Candidate.calc_failures,
        )
        .join(Candidate, Candidate.problem_id == Problem.id)
        .where(Problem.job_id == job_id)
        .order_by(Problem.id, Candidate.sample_index)
    )
    grouped: dict[int, tuple[str, str | None, list[EvalCandidate]]] = {}
    for pid, external_id, gold, index, answer, score, calls, failures in rows:
        entry = grouped.setdefault(pid, (external_id, gold, []))
        entry[2].append(EvalCandidate(index, answer, score, calls, failures))
    return [ProblemCandidates(ext, gold, tuple(c)) for ext, gold, c in grouped.values()]


def finalize_job(session: Session, job_id: int) -> bool:
    """Compute a finished job's metrics and mark it done; False while problems remain."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.RUNNING or job.n_done < job.n_problems:
        return False
    report = evaluate(job_candidates(session, job.id), k=job.vote_k, seed=job.seed)
    result = session.execute(
        sa.update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.RUNNING)
        .values(status=JobStatus.DONE, metrics=report.to_json(), finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)
    return rowcount(result) == 1
