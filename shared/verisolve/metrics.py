"""Every Prometheus metric verisolve exposes, and the functions that record them.

Workers record through ``record_*`` and ``task_*``, called by executor middleware
(verisolve.executors.instrumentation), never from task bodies. Job, accuracy, queue and outbox
metrics are not recorded by anyone: the exporter (verisolve.metrics_exporter) computes them from
PostgreSQL and the broker at scrape time, under the names declared here in EXPORTER_METRICS.

Prefork workers run in multiprocess mode: set PROMETHEUS_MULTIPROC_DIR (an empty directory)
before the worker starts; each process writes its values there and the main process serves the
sum (see ``worker_registry``). Throughput gauges are explained in verisolve.throughput.
Labels stay low-cardinality: stage, task, outcome, provider, finish reason; a job id appears
only on the exporter's per-active-job gauges.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from verisolve.answers import extract_answer
from verisolve.pipeline.stages import GeneratedCandidate
from verisolve.throughput import ThroughputPublisher

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
GENERATE, SCORE = "generate", "score"

# Seconds per problem: scoring takes well under a second on a GPU; sampling N candidates takes
# seconds there and up to tens of minutes on a CPU (tasks stop at the one-hour limit).
MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600)

WORKER_REGISTRY = CollectorRegistry(auto_describe=True)

# Work done, counted by the middleware around the generator and the verifier.
GENERATED_TOKENS = Counter(
    "verisolve_generated_tokens",
    "Tokens sampled by the generator.",
    registry=WORKER_REGISTRY,
)
CANDIDATES_GENERATED = Counter(
    "verisolve_candidates_generated",
    "Candidate solutions sampled, by why each stopped.",
    ["finish_reason"],
    registry=WORKER_REGISTRY,
)
CANDIDATES_SCORED = Counter(
    "verisolve_candidates_scored",
    "Candidate solutions scored by the verifier.",
    registry=WORKER_REGISTRY,
)
PROBLEMS_PROCESSED = Counter(
    "verisolve_problems_processed",
    "Problems whose candidates a stage produced (generate) or scored (score).",
    ["stage"],
    registry=WORKER_REGISTRY,
)
CALCULATOR_CALLS = Counter(
    "verisolve_calculator_calls",
    "Calculator annotations evaluated during sampling.",
    registry=WORKER_REGISTRY,
)
CALCULATOR_FAILURES = Counter(
    "verisolve_calculator_failures",
    "Calculator annotations that failed (error or timeout) and were left to the model.",
    registry=WORKER_REGISTRY,
)
ANSWER_PARSE_FAILURES = Counter(
    "verisolve_answer_parse_failures",
    "Candidates whose final answer could not be parsed as a number.",
    registry=WORKER_REGISTRY,
)
MODEL_SECONDS = Histogram(
    "verisolve_model_call_duration_seconds",
    "Wall time of one model call: sampling (generate) or scoring (score) one problem.",
    ["stage"],
    buckets=MODEL_BUCKETS,
    registry=WORKER_REGISTRY,
)

# Throughput over a sliding window, summed over the worker's live processes.
TOKENS_PER_SECOND = Gauge(
    "verisolve_generated_tokens_per_second",
    "Tokens sampled per second over the last minute.",
    multiprocess_mode="livesum",
    registry=WORKER_REGISTRY,
)
CANDIDATES_PER_SECOND = Gauge(
    "verisolve_candidates_per_second",
    "Candidates generated or scored per second over the last minute.",
    ["stage"],
    multiprocess_mode="livesum",
    registry=WORKER_REGISTRY,
)
PROBLEMS_PER_SECOND = Gauge(
    "verisolve_problems_per_second",
    "Problems generated or scored per second over the last minute.",
    ["stage"],
    multiprocess_mode="livesum",
    registry=WORKER_REGISTRY,
)

# What the worker runs on.
EXECUTION_PROVIDER = Gauge(
    "verisolve_execution_provider_info",
    "1 for the ONNX Runtime execution provider a stage's model runs on (cpu or cuda).",
    ["stage", "provider"],
    multiprocess_mode="livemax",
    registry=WORKER_REGISTRY,
)
GPU_DEVICES = Gauge(
    "verisolve_gpu_devices",
    "NVIDIA GPU devices visible to the worker (/dev/nvidiaN).",
    multiprocess_mode="livemax",
    registry=WORKER_REGISTRY,
)

# Celery tasks, from the worker's signal handlers.
TASKS = Counter(
    "verisolve_tasks",
    "Tasks finished, by task name and outcome (Celery state: success, failure, retry...).",
    ["task", "outcome"],
    registry=WORKER_REGISTRY,
)
TASK_EXCEPTIONS = Counter(
    "verisolve_task_exceptions",
    "Exceptions raised by tasks, by task name and exception class.",
    ["task", "exception"],
    registry=WORKER_REGISTRY,
)
TASK_SECONDS = Histogram(
    "verisolve_task_duration_seconds",
    "Wall time of a task, by task name and outcome.",
    ["task", "outcome"],
    buckets=TASK_BUCKETS,
    registry=WORKER_REGISTRY,
)
TASKS_IN_PROGRESS = Gauge(
    "verisolve_tasks_in_progress",
    "Tasks running now, by task name.",
    ["task"],
    multiprocess_mode="livesum",
    registry=WORKER_REGISTRY,
)

# The submission service's own requests, labelled by route template (never by raw path).
API_REGISTRY = CollectorRegistry(auto_describe=True)
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
UPLOAD_BUCKETS = tuple(float(4**e * 1024) for e in range(9))  # 1 KiB .. 64 MiB
API_REQUESTS = Counter(
    "verisolve_api_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=API_REGISTRY,
)
API_SECONDS = Histogram(
    "verisolve_api_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=API_BUCKETS,
    registry=API_REGISTRY,
)
API_UPLOAD_BYTES = Histogram(
    "verisolve_api_upload_bytes",
    "Bytes of request body received, by route template (requests with a body only).",
    ["route"],
    buckets=UPLOAD_BUCKETS,
    registry=API_REGISTRY,
)

_THROUGHPUT = ThroughputPublisher()


@dataclass(frozen=True)
class ExporterMetric:
    """A gauge the exporter computes at scrape time."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()

    def family(self) -> GaugeMetricFamily:
        """An empty family to add this scrape's samples to."""
        return GaugeMetricFamily(self.name, self.documentation, labels=list(self.labels))


JOBS = ExporterMetric("verisolve_jobs", "Jobs, by status.", ("status",))
JOB_INFO = ExporterMetric(
    "verisolve_job_info",
    "1 per active job, with its name, status, models and selection strategy.",
    ("job_id", "name", "status", "generator", "verifier", "strategy"),
)
JOB_PROBLEMS = ExporterMetric(
    "verisolve_job_problems", "Problems of an active job, by status.", ("job_id", "status")
)
JOB_PROGRESS = ExporterMetric(
    "verisolve_job_progress_ratio", "Fraction of an active job's problems done.", ("job_id",)
)
JOB_GRADED = ExporterMetric(
    "verisolve_job_graded_problems",
    "Done problems of an active job that have a gold answer (the accuracy denominator).",
    ("job_id",),
)
JOB_ACCURACY = ExporterMetric(
    "verisolve_job_accuracy_ratio",
    "Fraction of graded done problems a strategy answered correctly.",
    ("job_id", "strategy"),
)
JOB_COVERAGE = ExporterMetric(
    "verisolve_job_coverage_ratio",
    "Fraction of graded done problems solved by at least one candidate (test@N).",
    ("job_id",),
)
JOB_SELECTION_GAP = ExporterMetric(
    "verisolve_job_selection_gap_ratio",
    "Coverage minus the accuracy of the job's selection strategy: what selection leaves behind.",
    ("job_id",),
)
JOB_LAST_PROGRESS = ExporterMetric(
    "verisolve_job_last_progress_timestamp_seconds",
    "Unix time a problem of an active job last changed (or the job started).",
    ("job_id",),
)
QUEUE_MESSAGES = ExporterMetric(
    "verisolve_queue_messages", "Messages ready in a broker queue.", ("queue",)
)
QUEUE_CONSUMERS = ExporterMetric(
    "verisolve_queue_consumers", "Consumers attached to a broker queue.", ("queue",)
)
OUTBOX_PENDING = ExporterMetric(
    "verisolve_outbox_pending_messages", "Outbox rows the relay has not sent yet."
)
OUTBOX_OLDEST_AGE = ExporterMetric(
    "verisolve_outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox row not sent yet (0 when none).",
)
EXPORTER_UP = ExporterMetric(
    "verisolve_exporter_up",
    "1 when the exporter's last read of a source (database, broker) succeeded.",
    ("source",),
)
EXPORTER_METRICS: tuple[ExporterMetric, ...] = (
    JOBS,
    JOB_INFO,
    JOB_PROBLEMS,
    JOB_PROGRESS,
    JOB_GRADED,
    JOB_ACCURACY,
    JOB_COVERAGE,
    JOB_SELECTION_GAP,
    JOB_LAST_PROGRESS,
    QUEUE_MESSAGES,
    QUEUE_CONSUMERS,
    OUTBOX_PENDING,
    OUTBOX_OLDEST_AGE,
    EXPORTER_UP,
)


def record_generation(outputs: Sequence[GeneratedCandidate], seconds: float) -> None:
    """Count one problem's sampled candidates and the wall time they took."""
    tokens = sum(c.n_tokens for c in outputs)
    GENERATED_TOKENS.inc(tokens)
    for c in outputs:
        CANDIDATES_GENERATED.labels(c.finish_reason).inc()
    CALCULATOR_CALLS.inc(sum(c.calc_calls for c in outputs))
    CALCULATOR_FAILURES.inc(sum(c.calc_failures for c in outputs))
    ANSWER_PARSE_FAILURES.inc(sum(extract_answer(c.text) is None for c in outputs))
    PROBLEMS_PROCESSED.labels(GENERATE).inc()
    MODEL_SECONDS.labels(GENERATE).observe(seconds)
    _THROUGHPUT.add(TOKENS_PER_SECOND, tokens)
    _THROUGHPUT.add(CANDIDATES_PER_SECOND, len(outputs), GENERATE)
    _THROUGHPUT.add(PROBLEMS_PER_SECOND, 1, GENERATE)


def record_scoring(n_candidates: int, seconds: float) -> None:
    """Count one problem's scored candidates and the wall time the verifier took."""
    CANDIDATES_SCORED.inc(n_candidates)
    PROBLEMS_PROCESSED.labels(SCORE).inc()
    MODEL_SECONDS.labels(SCORE).observe(seconds)
    _THROUGHPUT.add(CANDIDATES_PER_SECOND, n_candidates, SCORE)
    _THROUGHPUT.add(PROBLEMS_PER_SECOND, 1, SCORE)


def record_request(method: str, route: str, status: int, seconds: float, body: int) -> None:
    """Count one HTTP request of the submission service, its time and its body size."""
    API_REQUESTS.labels(method, route, str(status)).inc()
    API_SECONDS.labels(method, route).observe(seconds)
    if body:
        API_UPLOAD_BYTES.labels(route).observe(body)


def record_provider(stage: str, provider: str) -> None:
    """Note the execution provider a stage's model runs on in this process."""
    EXECUTION_PROVIDER.labels(stage, provider).set(1)


def record_gpu_devices(dev_dir: str = "/dev") -> int:
    """Count the NVIDIA devices this process can see, record and return the count."""
    count = len([p for p in glob.glob(os.path.join(dev_dir, "nvidia*")) if _GPU_NODE.search(p)])
    GPU_DEVICES.set(count)
    return count


_GPU_NODE = re.compile(r"nvidia\d+$")


def task_started(task: str) -> None:
    """A task began in this process."""
    TASKS_IN_PROGRESS.labels(task).inc()


def task_finished(task: str, outcome: str, seconds: float) -> None:
    """A task ended with a Celery state (SUCCESS, FAILURE, RETRY...) after `seconds`."""
    outcome = outcome.lower()
    TASKS_IN_PROGRESS.labels(task).dec()
    TASKS.labels(task, outcome).inc()
    TASK_SECONDS.labels(task, outcome).observe(seconds)


def task_raised(task: str, exception: BaseException) -> None:
    """A task raised; the class name keeps the label bounded by the code, not the data."""
    TASK_EXCEPTIONS.labels(task, type(exception).__name__).inc()


class _DeadProcessReaper(Collector):
    """Drops the live-gauge files of processes that died without cleaning up (SIGKILL, OOM)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        for pid in _live_gauge_pids(self._path):
            if not _alive(pid):
                mark_dead(pid, self._path)
        return []


def _live_gauge_pids(path: str) -> set[int]:
    pids: set[int] = set()
    for name in os.listdir(path):
        match = re.fullmatch(r"gauge_live\w+?_(\d+)\.db", name)
        if match:
            pids.add(int(match[1]))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead(pid: int, path: str) -> None:
    """Drop a finished process's live gauges, so its throughput stops counting."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    """The multiprocess directory when multiprocess mode is on, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def worker_registry() -> CollectorRegistry:
    """What a worker serves: every process's values in multiprocess mode, else this process's."""
    path = multiprocess_dir()
    if path is None:
        return WORKER_REGISTRY
    registry = CollectorRegistry()
    registry.register(_DeadProcessReaper(path))
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def api_registry() -> CollectorRegistry:
    """What the submission service serves: its requests (every process's in multiprocess mode)."""
    path = multiprocess_dir()
    if path is None:
        return API_REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def clear_stale_files(path: str) -> int:
    """Delete value files that other processes left (call in a worker's main process at start)."""
    own = f"_{os.getpid()}.db"
    removed = 0
    for name in os.listdir(path):
        if name.endswith(".db") and not name.endswith(own):
            os.remove(os.path.join(path, name))
            removed += 1
    return removed


def sample_names() -> set[str]:
    """Every sample name verisolve exposes, with _total, _bucket, _sum and _count suffixes."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = {m.name for m in EXPORTER_METRICS}
    for family in (*_described(WORKER_REGISTRY), *_described(API_REGISTRY)):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def _described(registry: CollectorRegistry) -> Iterator[Metric]:
    # Describing does not read values, so it works in multiprocess mode too.
    for collector in list(registry._collector_to_names):
        describe = getattr(collector, "describe", None)
        if describe is not None:
            yield from describe()
