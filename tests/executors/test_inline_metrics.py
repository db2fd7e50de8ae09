"""The inline executor records the workers' metrics: model work and one task per stage."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from jobtools import make_job, spec
from verisolve import metrics
from verisolve.db import session_scope
from verisolve.executors.inline import InlineExecutor
from verisolve.executors.instrumentation import (
    instrument_generator,
    instrument_loader,
    instrument_scorer,
    timed_stage,
)
from verisolve.pipeline.routes import TaskName
from verisolve.pipeline.stages import GeneratedCandidate, SamplingRequest
from verisolve.problems import ProblemIn
from verisolve.tables import Job


@dataclass(frozen=True)
class Score:
    score: float
    token_values: tuple[float, ...] | None = None


class Generator:
    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        texts = ["<<2+2=4>>4\n#### 4", "no idea"]
        return [
            GeneratedCandidate(i, texts[i % 2], 7, "eos", 1 - i % 2)
            for i in range(request.sampling.n)
        ]


class Scorer:
    def score(self, question: str, completions: Sequence[str]) -> Sequence[Score]:
        return [Score(0.5) for _ in completions]


def value(name: str, **labels: str) -> float:
    return metrics.WORKER_REGISTRY.get_sample_value(name, labels) or 0.0


def test_an_inline_run_records_what_a_worker_would(own_engine: sa.Engine) -> None:
    engine = own_engine
    problems = [ProblemIn(f"p{i}", f"What is {i} + 2?", None, None, i) for i in range(3)]
    job_spec = spec("g", "v", n_samples=4, owner=f"t-{uuid.uuid4().hex[:8]}")
    with session_scope(engine) as session:
        job_id = make_job(session, job_spec, problems).id
    loads: list[str] = []

    def load_generator(name: str) -> Generator:
        loads.append(name)
        return Generator()

    before = {
        "tokens": value("verisolve_generated_tokens_total"),
        "scored": value("verisolve_candidates_scored_total"),
        "calls": value("verisolve_calculator_calls_total"),
        "parse": value("verisolve_answer_parse_failures_total"),
        "gen_tasks": value("verisolve_tasks_total", task=TaskName.GENERATE, outcome="success"),
        "fin_tasks": value("verisolve_tasks_total", task=TaskName.FINALIZE, outcome="success"),
        "agg_time": value(
            "verisolve_task_duration_seconds_count", task=TaskName.AGGREGATE, outcome="success"
        ),
    }
    executor = InlineExecutor(
        engine,
        instrument_loader(load_generator, instrument_generator),
        instrument_loader(lambda _: Scorer(), instrument_scorer),
        stage_timer=timed_stage,
    )
    executor.run(job_id)
    assert loads == ["g"]  # loaded and wrapped once, not once per problem
    assert value("verisolve_generated_tokens_total") == before["tokens"] + 3 * 4 * 7
    assert value("verisolve_candidates_scored_total") == before["scored"] + 12
    assert value("verisolve_calculator_calls_total") == before["calls"] + 6
    assert value("verisolve_answer_parse_failures_total") == before["parse"] + 6
    generated = value("verisolve_tasks_total", task=TaskName.GENERATE, outcome="success")
    assert generated == before["gen_tasks"] + 3
    finalized = value("verisolve_tasks_total", task=TaskName.FINALIZE, outcome="success")
    assert finalized == before["fin_tasks"] + 1
    timed = value(
        "verisolve_task_duration_seconds_count", task=TaskName.AGGREGATE, outcome="success"
    )
    assert timed == before["agg_time"] + 3
    assert value("verisolve_tasks_in_progress", task=TaskName.GENERATE) == 0
    with session_scope(engine) as session:
        assert session.get_one(Job, job_id).status == "done"


def test_a_failing_stage_counts_as_a_failed_task() -> None:
    failures = value("verisolve_tasks_total", task=TaskName.SCORE, outcome="failure")
    raised = value("verisolve_task_exceptions_total", task=TaskName.SCORE, exception="KeyError")
    with pytest.raises(KeyError), timed_stage("score"):
        raise KeyError("no such candidate")
    assert value("verisolve_tasks_total", task=TaskName.SCORE, outcome="failure") == failures + 1
    assert (
        value("verisolve_task_exceptions_total", task=TaskName.SCORE, exception="KeyError")
        == raised + 1
    )
