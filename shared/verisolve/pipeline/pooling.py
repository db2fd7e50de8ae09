"""Candidates of several jobs on the same problems, pooled, or the first N of each problem.

A candidate depends only on the job's seed, its problem's key (the external id), its sample
index and the models, so the first N candidates of a job run with more are the job that `-n N`
would have run, and jobs that differ only in their seed draw disjoint samples of the same
distribution: pooled, two jobs of 256 samples per problem are one of 512. The jobs must agree on
everything else that shapes a candidate or its score (generator, verifier, temperature, top-p,
top-k, longest solution); a field that differs is refused by name, and so is a seed used twice
(its candidates would be the same ones again). Problems are matched by external id and question;
only those every job holds are pooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.evaluation import ProblemCandidates
from verisolve.pipeline.stages import job_candidates
from verisolve.tables import Job, Problem

# What two pooled jobs must share: everything but the seed that decides a candidate or its score.
SHARED_FIELDS = ("generator", "verifier", "temperature", "top_p", "top_k", "max_new_tokens")


class PoolingError(ValueError):
    """Jobs that cannot be pooled, or a subset that cannot be taken; the message says why."""


def check_poolable(jobs: Sequence[Job]) -> None:
    """Refuse jobs that differ in a shared field, or that repeat a seed."""
    first = jobs[0]
    for other in jobs[1:]:
        if other.id == first.id:
            raise PoolingError(f"job {other.id} is pooled with itself")
        for name in SHARED_FIELDS:
            mine, theirs = getattr(first, name), getattr(other, name)
            if mine != theirs:
                raise PoolingError(
                    f"job {other.id}'s {name} is {theirs!r}, job {first.id}'s is {mine!r}: "
                    "pooled jobs differ only in their seed"
                )
    seen: dict[int, int] = {}
    for job in jobs:
        if job.seed in seen:
            raise PoolingError(
                f"jobs {seen[job.seed]} and {job.id} both have seed {job.seed}: "
                "their candidates are the same ones"
            )
        seen[job.seed] = job.id


def _identities(session: Session, job_id: int) -> dict[str, tuple[str, str]]:
    """External id -> (external id, question) of each of a job's problems."""
    rows = session.execute(
        sa.select(Problem.external_id, Problem.question).where(Problem.job_id == job_id)
    )
    return {ext: (ext, question) for ext, question in rows}


def pooled_candidates(session: Session, jobs: Sequence[Job]) -> list[ProblemCandidates]:
    """The first job's problems that every job holds, each with every job's candidates.

    Job i's sample indices are shifted by the sample counts of the jobs before it, so the pooled
    candidates of a problem are numbered 0 to the jobs' total N - 1 in job order.
    """
    check_poolable(jobs)
    shared = set(_identities(session, jobs[0].id).values())
    for job in jobs[1:]:
        shared &= set(_identities(session, job.id).values())
    ids = {ext for ext, _ in shared}
    pooled: dict[str, list[ProblemCandidates]] = {}
    offset = 0
    for job in jobs:
        for problem in job_candidates(session, job.id):
            if problem.problem_id in ids:
                shifted = tuple(
                    replace(c, sample_index=c.sample_index + offset) for c in problem.candidates
                )
                pooled.setdefault(problem.problem_id, []).append(
                    replace(problem, candidates=shifted)
                )
        offset += job.n_samples
    return [
        ProblemCandidates(
            parts[0].problem_id, parts[0].gold, tuple(c for p in parts for c in p.candidates)
        )
        for parts in pooled.values()
    ]


def first_samples(problems: Sequence[ProblemCandidates], n: int) -> list[ProblemCandidates]:
    """Each problem with its candidates of sample index below n only."""
    return [
        replace(p, candidates=tuple(c for c in p.candidates if c.sample_index < n))
        for p in problems
    ]
