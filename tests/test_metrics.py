"""The metric definitions, the recording API, and multiprocess serving (prefork workers)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import Counter, Gauge, Histogram

from verisolve import metrics
from verisolve.pipeline.stages import GeneratedCandidate

WORKER_LABELS = {"stage", "task", "outcome", "provider", "finish_reason", "exception"}
EXPORTER_LABELS = {
    "job_id",
    "name",
    "status",
    "generator",
    "verifier",
    "strategy",
    "queue",
    "source",
}


def value(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the worker registry (0 when absent)."""
    return metrics.WORKER_REGISTRY.get_sample_value(name, labels or {}) or 0.0


def candidate(
    index: int, text: str, tokens: int, reason: str = "answer", calls: int = 0, failures: int = 0
) -> GeneratedCandidate:
    return GeneratedCandidate(index, text, tokens, reason, calls, failures)


def test_names_follow_prometheus_conventions() -> None:
    collectors = [
        c
        for c in metrics.WORKER_REGISTRY._collector_to_names
        if isinstance(c, Counter | Gauge | Histogram)
    ]
    assert len(collectors) >= 15
    for collector in collectors:
        name = collector._name
        assert name.startswith("verisolve_"), name
        assert set(collector._labelnames) <= WORKER_LABELS, (name, collector._labelnames)
        if isinstance(collector, Histogram):
            assert name.endswith("_seconds"), name
        if isinstance(collector, Gauge):
            assert not name.endswith("_total"), name
    for spec in metrics.EXPORTER_METRICS:
        assert spec.name.startswith("verisolve_"), spec.name
        assert not spec.name.endswith("_total"), spec.name
        assert set(spec.labels) <= EXPORTER_LABELS, spec.name
        # A job id is a label only of the per-active-job gauges.
        assert ("job_id" in spec.labels) == spec.name.startswith("verisolve_job_"), spec.name


def test_sample_names_carry_the_exposition_suffixes() -> None:
    names = metrics.sample_names()
    assert {
        "verisolve_generated_tokens_total",
        "verisolve_model_call_duration_seconds_bucket",
        "verisolve_model_call_duration_seconds_sum",
        "verisolve_model_call_duration_seconds_count",
        "verisolve_generated_tokens_per_second",
        "verisolve_job_accuracy_ratio",
        "verisolve_queue_messages",
    } <= names
    assert "verisolve_generated_tokens" not in names  # a counter is exposed with _total only


def test_record_generation_counts_tokens_candidates_calculator_and_parse_failures() -> None:
    before = {
        "tokens": value("verisolve_generated_tokens_total"),
        "answer": value("verisolve_candidates_generated_total", {"finish_reason": "answer"}),
        "length": value("verisolve_candidates_generated_total", {"finish_reason": "length"}),
        "calls": value("verisolve_calculator_calls_total"),
        "failures": value("verisolve_calculator_failures_total"),
        "unparsed": value("verisolve_answer_parse_failures_total"),
        "problems": value("verisolve_problems_processed_total", {"stage": "generate"}),
        "calls_seen": value("verisolve_model_call_duration_seconds_count", {"stage": "generate"}),
    }
    outputs = [
        candidate(0, "2 + 2 = <<2+2=4>>4\n#### 4", 12, calls=1),
        candidate(1, "<<3*x=>> so #### 9", 20, calls=2, failures=1),
        candidate(2, "I am not sure what", 64, reason="length"),
    ]
    metrics.record_generation(outputs, seconds=1.5)
    assert value("verisolve_generated_tokens_total") - before["tokens"] == 96
    assert (
        value("verisolve_candidates_generated_total", {"finish_reason": "answer"})
        - before["answer"]
        == 2
    )
    assert (
        value("verisolve_candidates_generated_total", {"finish_reason": "length"})
        - before["length"]
        == 1
    )
    assert value("verisolve_calculator_calls_total") - before["calls"] == 3
    assert value("verisolve_calculator_failures_total") - before["failures"] == 1
    assert value("verisolve_answer_parse_failures_total") - before["unparsed"] == 1
    assert (
        value("verisolve_problems_processed_total", {"stage": "generate"}) - before["problems"] == 1
    )
    assert (
        value("verisolve_model_call_duration_seconds_count", {"stage": "generate"})
        - before["calls_seen"]
        == 1
    )


def test_record_scoring_and_provider() -> None:
    scored = value("verisolve_candidates_scored_total")
    problems = value("verisolve_problems_processed_total", {"stage": "score"})
    metrics.record_scoring(16, seconds=0.2)
    metrics.record_provider("score", "cuda")
    assert value("verisolve_candidates_scored_total") - scored == 16
    assert value("verisolve_problems_processed_total", {"stage": "score"}) - problems == 1
    assert value("verisolve_execution_provider_info", {"stage": "score", "provider": "cuda"}) == 1


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        pytest.param([], 0, id="no GPU"),
        pytest.param(["nvidiactl", "nvidia-uvm", "nvidia-modeset"], 0, id="driver nodes only"),
        pytest.param(["nvidia0", "nvidiactl", "nvidia-uvm"], 1, id="one GPU"),
        pytest.param(["nvidia0", "nvidia1", "nvidia7", "nvidiactl"], 3, id="three GPUs"),
    ],
)
def test_gpu_devices_are_the_numbered_nvidia_nodes(
    tmp_path: Path, nodes: list[str], expected: int
) -> None:
    for node in nodes:
        (tmp_path / node).touch()
    assert metrics.record_gpu_devices(str(tmp_path)) == expected
    assert value("verisolve_gpu_devices") == expected


def test_task_hooks_count_outcomes_and_exceptions() -> None:
    task = "verisolve.test-task"
    metrics.task_started(task)
    assert value("verisolve_tasks_in_progress", {"task": task}) == 1
    metrics.task_finished(task, "FAILURE", 0.3)
    metrics.task_raised(task, KeyError("x"))
    assert value("verisolve_tasks_in_progress", {"task": task}) == 0
    assert value("verisolve_tasks_total", {"task": task, "outcome": "failure"}) == 1
    assert value("verisolve_task_exceptions_total", {"task": task, "exception": "KeyError"}) == 1
    assert value("verisolve_task_duration_seconds_count", {"task": task, "outcome": "failure"}) == 1


def test_without_multiprocess_mode_a_worker_serves_its_own_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    assert metrics.worker_registry() is metrics.WORKER_REGISTRY


def test_clear_stale_files_keeps_only_this_process(tmp_path: Path) -> None:
    import os

    own = tmp_path / f"counter_{os.getpid()}.db"
    stale = [tmp_path / "counter_1.db", tmp_path / "gauge_livesum_2.db"]
    for path in [own, *stale]:
        path.write_bytes(b"")
    assert metrics.clear_stale_files(str(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [own.name]


# Runs in a fresh interpreter: multiprocess mode is chosen when prometheus_client is imported.
PREFORK_SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, os, signal, sys, time
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
    from verisolve import metrics
    from verisolve.pipeline.stages import GeneratedCandidate

    def child(ready, stop):
        outputs = [GeneratedCandidate(i, "#### 4", 10, "answer") for i in range(6)]
        metrics.record_generation(outputs, 0.5)  # 60 tokens: 1 token/s over the 60 s window
        time.sleep(0.3)  # the publisher thread writes the rate at once
        ready.set()
        stop.wait()
        metrics.mark_dead(os.getpid(), sys.argv[1])  # what worker_process_shutdown does

    def sample(name):
        values = [s.value for f in metrics.worker_registry().collect() for s in f.samples
                  if s.name == name]
        return sum(values) if values else None

    ctx = multiprocessing.get_context("fork")
    stops = [ctx.Event(), ctx.Event()]
    readies = [ctx.Event(), ctx.Event()]
    children = [ctx.Process(target=child, args=(r, s)) for r, s in zip(readies, stops)]
    for c in children:
        c.start()
    for r in readies:
        r.wait(10)
    result = {"both": [sample("verisolve_generated_tokens_per_second"),
                       sample("verisolve_generated_tokens_total")]}
    os.kill(children[0].pid, signal.SIGKILL)
    children[0].join()
    result["one_killed"] = [sample("verisolve_generated_tokens_per_second"),
                            sample("verisolve_generated_tokens_total")]
    stops[1].set()
    children[1].join()
    result["both_gone"] = [sample("verisolve_generated_tokens_per_second"),
                           sample("verisolve_generated_tokens_total")]
    print(json.dumps(result))
    """
)


def test_prefork_children_are_summed_and_dead_ones_stop_counting_in_throughput(
    tmp_path: Path,
) -> None:
    script = tmp_path / "prefork.py"
    script.write_text(PREFORK_SCRIPT)
    directory = tmp_path / "multiproc"
    directory.mkdir()
    done = subprocess.run(
        [sys.executable, str(script), str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["both"] == [pytest.approx(2.0), 120.0]
    # The killed child's live gauge is reaped at scrape time; its counted work stays.
    assert result["one_killed"] == [pytest.approx(1.0), 120.0]
    assert result["both_gone"][0] in (None, 0.0)
    assert result["both_gone"][1] == 120.0


def test_every_metric_is_defined_in_the_metrics_module() -> None:
    # "All Prometheus metrics live in one module": no other source file creates one.
    package = Path(metrics.__file__).parent
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info|GaugeMetricFamily)\(")
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "metrics.py" and pattern.search(path.read_text())
    ]
    assert offenders == []
