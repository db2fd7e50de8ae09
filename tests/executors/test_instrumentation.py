"""Worker middleware: Celery signal handlers and the model wrappers record verisolve.metrics."""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from celery import Celery

from verisolve import metrics
from verisolve.executors import instrumentation
from verisolve.inference.sampling import SamplingParams
from verisolve.pipeline.stages import GeneratedCandidate, SamplingRequest


def value(name: str, labels: dict[str, str]) -> float:
    return metrics.WORKER_REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def app() -> Celery:
    """An eager app: tasks run in this process, through Celery's tracer and its signals."""
    celery = Celery("instrumentation-test", set_as_current=False)
    celery.conf.update(task_always_eager=True, task_eager_propagates=False, broker_url="memory://")
    instrumentation.install(celery, port=0)

    @celery.task(name="test.ok")
    def ok() -> int:
        return 1

    @celery.task(name="test.broken")
    def broken() -> int:
        raise ZeroDivisionError("no")

    return celery


@pytest.mark.parametrize(
    ("task", "outcome", "exception"),
    [("test.ok", "success", None), ("test.broken", "failure", "ZeroDivisionError")],
)
def test_tasks_are_counted_and_timed_by_outcome(
    app: Celery, task: str, outcome: str, exception: str | None
) -> None:
    counted = value("verisolve_tasks_total", {"task": task, "outcome": outcome})
    timed = value("verisolve_task_duration_seconds_count", {"task": task, "outcome": outcome})
    raised = value("verisolve_task_exceptions_total", {"task": task, "exception": str(exception)})
    app.tasks[task].apply()
    assert value("verisolve_tasks_total", {"task": task, "outcome": outcome}) == counted + 1
    assert (
        value("verisolve_task_duration_seconds_count", {"task": task, "outcome": outcome})
        == timed + 1
    )
    assert value("verisolve_tasks_in_progress", {"task": task}) == 0
    if exception is not None:
        after = value("verisolve_task_exceptions_total", {"task": task, "exception": exception})
        assert after == raised + 1


def test_installing_twice_does_not_count_twice(app: Celery) -> None:
    instrumentation.install(app, port=0)
    counted = value("verisolve_tasks_total", {"task": "test.ok", "outcome": "success"})
    app.tasks["test.ok"].apply()
    assert value("verisolve_tasks_total", {"task": "test.ok", "outcome": "success"}) == counted + 1


@dataclass
class TwoSamples:
    """A generator double: two candidates of 7 tokens."""

    calls: int = 0

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        self.calls += 1
        return [GeneratedCandidate(i, f"#### {i}", 7, "answer") for i in range(2)]


@dataclass(frozen=True)
class Score:
    score: float
    token_values: tuple[float, ...] | None = None


class HalfScorer:
    """A verifier double: every candidate scores 0.5."""

    def score(self, question: str, completions: Sequence[str]) -> Sequence[Score]:
        return [Score(0.5) for _ in completions]


def test_the_wrapped_generator_returns_its_output_and_records_it() -> None:
    inner = TwoSamples()
    generator = instrumentation.instrument_generator(inner, provider="cpu")
    tokens = value("verisolve_generated_tokens_total", {})
    request = SamplingRequest("q", "1:a", SamplingParams(n=2, max_new_tokens=32))
    outputs = generator.generate(request)
    assert [c.text for c in outputs] == ["#### 0", "#### 1"]
    assert inner.calls == 1
    assert value("verisolve_generated_tokens_total", {}) == tokens + 14
    assert value("verisolve_execution_provider_info", {"stage": "generate", "provider": "cpu"}) == 1


def test_the_wrapped_scorer_returns_its_scores_and_records_them() -> None:
    scorer = instrumentation.instrument_scorer(HalfScorer(), provider="cuda")
    scored = value("verisolve_candidates_scored_total", {})
    assert [s.score for s in scorer.score("q", ["a", "b", "c"])] == [0.5, 0.5, 0.5]
    assert value("verisolve_candidates_scored_total", {}) == scored + 3
    assert value("verisolve_execution_provider_info", {"stage": "score", "provider": "cuda"}) == 1


def test_the_metrics_server_serves_the_worker_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    server = instrumentation.start_metrics_server(0, addr="127.0.0.1")
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
    assert "verisolve_generated_tokens_total" in body
    assert "# TYPE verisolve_generated_tokens_per_second gauge" in body


def test_a_worker_whose_metrics_port_is_taken_warns_and_runs_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers on one host with one VERISOLVE_METRICS_PORT: the second says so, and works."""
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with caplog.at_level(logging.WARNING, logger=instrumentation.__name__):
            instrumentation._prepare_worker(object(), port)
    finally:
        holder.close()
    assert f"cannot serve /metrics on port {port}" in caplog.text
    assert "VERISOLVE_METRICS_PORT" in caplog.text
