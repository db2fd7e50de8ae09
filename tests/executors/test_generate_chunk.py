"""A generate task over a chunk of problems: one batch, one commit per problem, redelivery skips."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import pytest
import sqlalchemy as sa
from doubles import BatchingGenerator

from jobtools import make_job as new_job
from jobtools import spec
from verisolve.db import session_scope
from verisolve.executors import celery_worker
from verisolve.pipeline.jobs import mark_running
from verisolve.pipeline.stages import GeneratedCandidate, K, SamplingRequest
from verisolve.problems import ProblemIn
from verisolve.tables import Candidate, OutboxMessage, Problem, ProblemStatus

PROBLEMS = [ProblemIn(f"c{i}", f"What is {i}*2?", None, None, i + 1) for i in range(4)]
ANSWERS = {p.question: ["1"] for p in PROBLEMS}


@pytest.fixture
def engine(own_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    """This module's database; steps are left in the outbox instead of sent to a broker."""
    monkeypatch.setattr(celery_worker, "_publish_now", lambda engine, key: None)
    return own_engine


def make_job(engine: sa.Engine) -> list[int]:
    with session_scope(engine) as session:
        job = new_job(session, spec("g", n_samples=2), PROBLEMS)
        mark_running(session, job)
        session.flush()
        return sorted(p.id for p in job.problems)


def use(monkeypatch: pytest.MonkeyPatch, generator: object) -> None:
    monkeypatch.setattr(celery_worker, "generator_named", lambda name: generator)


def status(engine: sa.Engine, problem_id: int) -> str:
    with session_scope(engine) as session:
        return str(session.get_one(Problem, problem_id).status)


def test_a_chunk_commits_each_problem_with_its_next_step(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = make_job(engine)
    seen: list[str] = []
    gen = BatchingGenerator(ANSWERS, between=lambda tag: seen.append(status(engine, ids[0])))
    use(monkeypatch, gen)
    celery_worker.generate_chunk(ids, engine)
    assert [len(b) for b in gen.batches] == [4], "one batch for the chunk"
    # Problems come back last first: the first one was still waiting while others committed.
    assert seen[0] == ProblemStatus.PENDING
    assert {status(engine, i) for i in ids} == {ProblemStatus.SCORED}
    with session_scope(engine) as session:
        keys = set(session.scalars(sa.select(OutboxMessage.dedupe_key)))
        assert {f"aggregate:{i}" for i in ids} <= keys
        count = session.scalar(
            sa.select(sa.func.count()).select_from(Candidate).where(Candidate.problem_id.in_(ids))
        )
        assert count == 8
    celery_worker.generate_chunk(ids, engine)  # redelivered: nothing left to generate
    assert len(gen.batches) == 1


def test_a_redelivered_chunk_skips_problems_already_generated(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = make_job(engine)
    gen = BatchingGenerator(ANSWERS)
    use(monkeypatch, gen)
    celery_worker.generate_chunk(ids[:2], engine)
    celery_worker.generate_chunk(ids, engine)
    assert [len(b) for b in gen.batches] == [2, 2]
    assert {status(engine, i) for i in ids} == {ProblemStatus.SCORED}


class Failing(BatchingGenerator):
    """Hands back one problem, then fails."""

    def generate_many(
        self, requests: Iterable[tuple[K, SamplingRequest]]
    ) -> Iterator[tuple[K, Sequence[GeneratedCandidate]]]:
        for tag, outputs in super().generate_many(requests):
            yield tag, outputs
            raise RuntimeError("device lost")


def test_a_failure_keeps_what_completed_and_notes_the_rest(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = make_job(engine)
    use(monkeypatch, Failing(ANSWERS))
    with pytest.raises(RuntimeError, match="device lost"):
        celery_worker.generate_chunk(ids, engine)
    assert status(engine, ids[-1]) == ProblemStatus.SCORED
    with session_scope(engine) as session:
        for problem_id in ids[:-1]:
            problem = session.get_one(Problem, problem_id)
            assert problem.status == ProblemStatus.PENDING
            assert problem.error == "RuntimeError: device lost"
