"""The inspector's reads: a tenant's jobs, a page of a job's problems, a problem's candidates.

Every query is scoped to the tenant and paged, so a page costs the same on a job of ten problems
and on one of thousands: problems by (job_id, id), candidates by their problem.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.answers import is_correct
from verisolve.tables import Candidate, Job, JobStatus, Problem, Selection

JOBS_PER_PAGE = 25
PROBLEMS_PER_PAGE = 50
CANDIDATES_PER_PAGE = 25


class NotFoundError(LookupError):
    """No such job or problem for this tenant (another tenant's is not found either)."""


@dataclass(frozen=True)
class JobRow:
    """A job with its accuracy per strategy (final metrics, or live from the selections)."""

    job: Job
    accuracy: dict[str, float]
    n_graded: int
    coverage: float | None


@dataclass(frozen=True)
class ProblemFilter:
    """Which of a job's problems a page shows."""

    wrong: bool = False  # the job's strategy chose a wrong answer
    disagree: bool = False  # the strategies chose different answers
    unparsed: bool = False  # some candidate has no parseable final answer
    q: str = ""  # text in the question, or the problem's id

    def query_args(self) -> dict[str, str]:
        """The filter as URL query arguments (only the ones set)."""
        args = {k: "1" for k in ("wrong", "disagree", "unparsed") if getattr(self, k)}
        return {**args, "q": self.q} if self.q else args


@dataclass(frozen=True)
class Vote:
    """One distinct answer among a problem's candidates."""

    answer: str | None
    count: int
    correct: bool
    best_score: float | None = None


@dataclass
class ProblemRow:
    """A problem with every strategy's selection and its candidates' answers."""

    problem: Problem
    selections: dict[str, Selection] = field(default_factory=dict)
    votes: list[Vote] = field(default_factory=list)

    @property
    def n_candidates(self) -> int:
        """Candidates stored for the problem."""
        return sum(v.count for v in self.votes)

    @property
    def n_unparsed(self) -> int:
        """Candidates without a parseable final answer."""
        return sum(v.count for v in self.votes if v.answer is None)

    @property
    def covered(self) -> bool | None:
        """Whether some candidate is right; None without a gold answer."""
        return any(v.correct for v in self.votes) if self.problem.gold is not None else None


@dataclass(frozen=True)
class Page:
    """Which slice of how many rows a page shows."""

    number: int
    size: int
    total: int

    @property
    def offset(self) -> int:
        """Rows before this page."""
        return (self.number - 1) * self.size

    @property
    def last(self) -> int:
        """The number of the last page (1 when there are no rows)."""
        return max(1, -(-self.total // self.size))


def owned_job(session: Session, tenant: str, job_id: int) -> Job:
    """The tenant's job; raises NotFoundError."""
    job = session.scalar(sa.select(Job).where(Job.id == job_id, Job.owner == tenant))
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return job


def job_rows(session: Session, tenant: str, before: int | None) -> list[JobRow]:
    """The tenant's newest jobs (older than `before` when given), with accuracy."""
    query = sa.select(Job).where(Job.owner == tenant).order_by(Job.id.desc())
    if before is not None:
        query = query.where(Job.id < before)
    jobs = list(session.scalars(query.limit(JOBS_PER_PAGE)))
    live = _live_accuracy(session, [j.id for j in jobs if not _final(j)])
    return [_job_row(job, live.get(job.id, {})) for job in jobs]


def job_row(session: Session, job: Job) -> JobRow:
    """One job with its accuracy."""
    live = {} if _final(job) else _live_accuracy(session, [job.id]).get(job.id, {})
    return _job_row(job, live)


def _final(job: Job) -> bool:
    return job.status == JobStatus.DONE and bool(job.metrics)


def _job_row(job: Job, live: dict[str, tuple[int, int]]) -> JobRow:
    if _final(job):
        metrics: dict[str, Any] = job.metrics or {}
        accuracy = {str(s): float(a) for s, a in (metrics.get("strategies") or {}).items()}
        return JobRow(job, accuracy, int(metrics.get("n_graded", 0)), metrics.get("coverage"))
    graded = max((n for n, _ in live.values()), default=0)
    accuracy = {s: right / n for s, (n, right) in live.items() if n}
    return JobRow(job, accuracy, graded, None)


def _live_accuracy(session: Session, job_ids: list[int]) -> dict[int, dict[str, tuple[int, int]]]:
    """Per job and strategy: (graded problems answered, right) from the selections so far."""
    if not job_ids:
        return {}
    right = sa.func.sum(sa.case((Selection.correct.is_(True), 1), else_=0))
    rows = session.execute(
        sa.select(Problem.job_id, Selection.strategy, sa.func.count(), right)
        .join(Selection, Selection.problem_id == Problem.id)
        .where(Problem.job_id.in_(job_ids), Selection.correct.is_not(None))
        .group_by(Problem.job_id, Selection.strategy)
    )
    out: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    for job_id, strategy, count, n_right in rows:
        out[job_id][strategy] = (int(count), int(n_right or 0))
    return out


def _conditions(job: Job, where: ProblemFilter) -> list[sa.ColumnElement[bool]]:
    """What the job's problems must satisfy to pass the filter."""
    conditions: list[sa.ColumnElement[bool]] = [Problem.job_id == job.id]
    if where.q:
        conditions.append(
            Problem.question.ilike(_contains(where.q), escape="\\")
            | (Problem.external_id == where.q)
        )
    if where.wrong:
        conditions.append(
            sa.exists().where(
                Selection.problem_id == Problem.id,
                Selection.strategy == job.strategy,
                Selection.correct.is_(False),
            )
        )
    if where.disagree:
        answers = sa.func.count(sa.distinct(sa.func.coalesce(Selection.answer, "")))
        split = (
            sa.select(Selection.problem_id)
            .join(Problem, Problem.id == Selection.problem_id)
            .where(Problem.job_id == job.id)
            .group_by(Selection.problem_id)
            .having(answers > 1)
        )
        conditions.append(Problem.id.in_(split.correlate(None)))
    if where.unparsed:
        conditions.append(
            sa.exists().where(Candidate.problem_id == Problem.id, Candidate.answer.is_(None))
        )
    return conditions


def _contains(text: str) -> str:
    """A LIKE pattern for text anywhere, its wildcards escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def problem_page(
    session: Session, job: Job, where: ProblemFilter, number: int
) -> tuple[Page, list[ProblemRow]]:
    """One page of the job's problems that pass the filter, in upload order."""
    conditions = _conditions(job, where)
    total = int(session.scalar(sa.select(sa.func.count(Problem.id)).where(*conditions)) or 0)
    page = Page(number, PROBLEMS_PER_PAGE, total)
    problems = list(
        session.scalars(
            sa.select(Problem)
            .where(*conditions)
            .order_by(Problem.id)
            .offset(page.offset)
            .limit(page.size)
        )
    )
    rows = {p.id: ProblemRow(p) for p in problems}
    if rows:
        _attach_selections(session, rows)
        _attach_votes(session, rows)
    return page, list(rows.values())


def _attach_selections(session: Session, rows: dict[int, ProblemRow]) -> None:
    for selection in session.scalars(sa.select(Selection).where(Selection.problem_id.in_(rows))):
        rows[selection.problem_id].selections[selection.strategy] = selection


def _attach_votes(session: Session, rows: dict[int, ProblemRow]) -> None:
    query = (
        sa.select(
            Candidate.problem_id, Candidate.answer, sa.func.count(), sa.func.max(Candidate.score)
        )
        .where(Candidate.problem_id.in_(rows))
        .group_by(Candidate.problem_id, Candidate.answer)
    )
    for problem_id, answer, count, best in session.execute(query):
        gold = rows[problem_id].problem.gold
        vote = Vote(answer, int(count), is_correct(answer, gold) if gold else False, best)
        rows[problem_id].votes.append(vote)
    for row in rows.values():
        row.votes.sort(key=lambda v: (-v.count, v.answer is None, v.answer or ""))


def problem_row(session: Session, job: Job, problem_id: int) -> ProblemRow:
    """One problem of the job with its selections and votes; raises NotFoundError."""
    problem = session.scalar(
        sa.select(Problem).where(Problem.id == problem_id, Problem.job_id == job.id)
    )
    if problem is None:
        raise NotFoundError(f"no problem {problem_id} in job {job.id}")
    rows = {problem.id: ProblemRow(problem)}
    _attach_selections(session, rows)
    _attach_votes(session, rows)
    return rows[problem.id]


def candidate_page(session: Session, row: ProblemRow, number: int) -> tuple[Page, list[Candidate]]:
    """One page of a problem's candidates, highest verifier score first (unscored last)."""
    page = Page(number, CANDIDATES_PER_PAGE, row.n_candidates)
    query = (
        sa.select(Candidate)
        .where(Candidate.problem_id == row.problem.id)
        .order_by(Candidate.score.is_(None), Candidate.score.desc(), Candidate.sample_index)
        .offset(page.offset)
        .limit(page.size)
    )
    return page, list(session.scalars(query))
