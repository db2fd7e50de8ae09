"""Creating, starting and cancelling jobs: the one path every front end (CLI, API) takes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.db.base import utcnow
from verisolve.problems import ProblemIn
from verisolve.selection import Strategy
from verisolve.tables import Job, JobStatus, Problem, ProblemStatus


class JobError(ValueError):
    """A job request that cannot be carried out (bad parameters, wrong state)."""


@dataclass(frozen=True)
class JobSpec:
    """A job's parameters: models, sampling and selection."""

    generator: str
    verifier: str | None = None
    n_samples: int = 16
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int = 0
    strategy: str | None = None  # default: topk-vote with a verifier, majority without
    vote_k: int = 5
    owner: str = "local"
    name: str = ""

    def resolved_strategy(self) -> Strategy:
        """The strategy that answers, checked against the presence of a verifier."""
        default = Strategy.TOPK_VOTE if self.verifier else Strategy.MAJORITY
        names = ", ".join(s.value for s in Strategy)
        try:
            strategy = Strategy(self.strategy) if self.strategy else default
        except ValueError:
            raise JobError(f"unknown strategy {self.strategy!r}; choose one of: {names}") from None
        if strategy.needs_scores and not self.verifier:
            raise JobError(f"strategy {strategy.value!r} needs a verifier (--verifier NAME)")
        return strategy

    def validate(self) -> None:
        """Raise JobError naming the first bad field."""
        checks = [
            (self.n_samples >= 1, "n_samples must be at least 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (self.vote_k >= 1, "vote_k must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise JobError(message)
        try:
            self.resolved_strategy()
        except ValueError as exc:
            raise JobError(str(exc)) from None

    def fingerprint(self, problems: Sequence[ProblemIn]) -> str:
        """A digest of parameters and problems: the same run again finds its job to resume."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        for p in problems:
            digest.update(json.dumps([p.external_id, p.question, p.gold_raw]).encode())
        return digest.hexdigest()


def create_job(session: Session, spec: JobSpec, problems: Sequence[ProblemIn] = ()) -> Job:
    """A new pending job with its problems; flushed, not committed."""
    spec.validate()
    job = Job(
        owner=spec.owner,
        name=spec.name,
        status=JobStatus.PENDING,
        generator=spec.generator,
        verifier=spec.verifier,
        n_samples=spec.n_samples,
        temperature=spec.temperature,
        top_p=spec.top_p,
        top_k=spec.top_k,
        max_new_tokens=spec.max_new_tokens,
        seed=spec.seed,
        strategy=spec.resolved_strategy().value,
        vote_k=spec.vote_k,
        fingerprint=spec.fingerprint(problems) if problems else None,
    )
    session.add(job)
    session.flush()
    add_problems(session, job, problems)
    return job


def add_problems(session: Session, job: Job, problems: Iterable[ProblemIn]) -> int:
    """Insert problems a job does not hold yet (by external id); returns how many were new."""
    if job.status != JobStatus.PENDING:
        raise JobError(f"job {job.id} is {job.status}: problems can only be added while pending")
    rows = [
        {
            "job_id": job.id,
            "external_id": p.external_id,
            "line_no": p.line_no,
            "question": p.question,
            "gold_raw": p.gold_raw,
            "gold": p.gold,
        }
        for p in problems
    ]
    if not rows:
        return 0
    known = set(
        session.scalars(
            sa.select(Problem.external_id).where(
                Problem.job_id == job.id,
                Problem.external_id.in_([r["external_id"] for r in rows]),
            )
        )
    )
    fresh = [r for r in rows if r["external_id"] not in known]
    if fresh:
        session.execute(sa.insert(Problem), fresh)
        job.n_problems += len(fresh)
        session.flush()
    return len(fresh)


def start_job(session: Session, job: Job) -> list[int]:
    """Mark a job running; returns the ids of its problems that wait for generation."""
    if job.status in (JobStatus.CANCELLED, JobStatus.FAILED):
        raise JobError(f"job {job.id} is {job.status}; it cannot be started")
    if job.n_problems == 0:
        raise JobError(f"job {job.id} has no problems")
    if job.status == JobStatus.PENDING:
        job.status = JobStatus.RUNNING
        job.started_at = utcnow()
    session.flush()
    return list(
        session.scalars(
            sa.select(Problem.id)
            .where(Problem.job_id == job.id, Problem.status == ProblemStatus.PENDING)
            .order_by(Problem.id)
        )
    )


def cancel_job(session: Session, job: Job) -> bool:
    """Cancel a job that has not finished; workers skip its remaining problems."""
    if job.status in (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED):
        return False
    job.status = JobStatus.CANCELLED
    job.finished_at = utcnow()
    session.flush()
    return True


def find_job(session: Session, fingerprint: str) -> Job | None:
    """The newest unfinished or finished job with this fingerprint, for resuming."""
    return session.scalars(
        sa.select(Job)
        .where(Job.fingerprint == fingerprint, Job.status != JobStatus.CANCELLED)
        .order_by(Job.id.desc())
        .limit(1)
    ).first()
