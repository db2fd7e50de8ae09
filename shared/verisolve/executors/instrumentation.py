"""Worker middleware that records verisolve.metrics: Celery signals, model wrappers, /metrics.

Wiring, in the worker: ``install(app)`` once, where the app is built or the tasks imported; and
the models the stages get wrapped where they are loaded, ``instrument_generator(generator)`` and
``instrument_scorer(scorer)``. Task bodies record nothing themselves.

The inline executor (`verisolve solve`) records the same metrics: its loaders wrap the models
with ``instrument_loader`` and each stage runs inside ``timed_stage``, under the task name the
Celery worker would record for it.

Prefork: the main process serves /metrics on ``settings.metrics_port``; with
PROMETHEUS_MULTIPROC_DIR set it sums the values that every child wrote there (see
verisolve.metrics). Without it, a prefork worker would serve only its main process, which runs no
task, so ``install`` logs a warning.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

from celery import Celery
from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
)
from prometheus_client import start_http_server

from verisolve import metrics
from verisolve.pipeline.routes import ROUTES
from verisolve.pipeline.stages import (
    CandidateGenerator,
    CandidateScore,
    CandidateScorer,
    GeneratedCandidate,
    K,
    SamplingRequest,
    Stage,
    generate_stream,
)
from verisolve.settings import get_settings

logger = logging.getLogger(__name__)
_Model = TypeVar("_Model")
_Wrapped = TypeVar("_Wrapped")

_started: dict[str, float] = {}


class InstrumentedGenerator:
    """A generator that records each problem's candidates, tokens and time."""

    def __init__(self, inner: CandidateGenerator) -> None:
        self.inner = inner

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        """Sample through the wrapped generator and record what it produced."""
        started = time.perf_counter()
        outputs = self.inner.generate(request)
        metrics.record_generation(outputs, time.perf_counter() - started)
        return outputs

    def generate_many(
        self, requests: Iterable[tuple[K, SamplingRequest]]
    ) -> Iterator[tuple[K, Sequence[GeneratedCandidate]]]:
        """Stream problems through the wrapped generator, recording each as it completes."""
        started = time.perf_counter()
        for tag, outputs in generate_stream(self.inner, requests):
            # Problems overlap in the batch: each one is charged the time since the last one.
            now = time.perf_counter()
            metrics.record_generation(outputs, now - started)
            started = now
            yield tag, outputs


class InstrumentedScorer:
    """A scorer that records each problem's scored candidates and time."""

    def __init__(self, inner: CandidateScorer) -> None:
        self.inner = inner

    def score(self, question: str, completions: Sequence[str]) -> Sequence[CandidateScore]:
        """Score through the wrapped verifier and record the work."""
        started = time.perf_counter()
        scores = self.inner.score(question, completions)
        metrics.record_scoring(len(scores), time.perf_counter() - started)
        return scores


def instrument_generator(
    generator: CandidateGenerator, provider: str | None = None
) -> InstrumentedGenerator:
    """Wrap a loaded generator; records the provider it runs on (the configured one by default)."""
    metrics.record_provider(metrics.GENERATE, provider or get_settings().provider)
    return InstrumentedGenerator(generator)


def instrument_scorer(scorer: CandidateScorer, provider: str | None = None) -> InstrumentedScorer:
    """Wrap a loaded verifier; records the provider it runs on (the configured one by default)."""
    metrics.record_provider(metrics.SCORE, provider or get_settings().provider)
    return InstrumentedScorer(scorer)


def instrument_loader(
    load: Callable[[str], _Model], wrap: Callable[[_Model], _Wrapped]
) -> Callable[[str], _Wrapped]:
    """A model loader whose models come wrapped by `wrap`, once per name (the inline executor)."""
    loaded: dict[str, _Wrapped] = {}

    def load_wrapped(name: str) -> _Wrapped:
        if name not in loaded:
            loaded[name] = wrap(load(name))
        return loaded[name]

    return load_wrapped


@contextmanager
def timed_stage(stage: Stage) -> Iterator[None]:
    """Record a stage run inline as a worker records the Celery task that runs it."""
    task = ROUTES[stage].task.value
    metrics.task_started(task)
    started = time.perf_counter()
    outcome = "failure"
    try:
        yield
        outcome = "success"
    except Exception as exc:
        metrics.task_raised(task, exc)
        raise
    finally:
        metrics.task_finished(task, outcome, time.perf_counter() - started)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> WSGIServer:
    """Serve the worker's metrics on a daemon thread (every process's, in multiprocess mode)."""
    server, _ = start_http_server(port, addr=addr, registry=metrics.worker_registry())
    return server


def install(app: Celery, port: int | None = None) -> None:
    """Record task metrics from Celery's signals and serve /metrics when the worker starts.

    `port` defaults to settings.metrics_port; 0 serves nothing. Calling it again is harmless.
    """
    serve_port = get_settings().metrics_port if port is None else port

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is app:
            _prepare_worker(sender, serve_port)

    # dispatch_uid makes a second install replace the first instead of counting twice.
    worker_init.connect(on_worker_init, weak=False, dispatch_uid="verisolve.metrics.init")
    task_prerun.connect(_on_prerun, weak=False, dispatch_uid="verisolve.metrics.prerun")
    task_postrun.connect(_on_postrun, weak=False, dispatch_uid="verisolve.metrics.postrun")
    task_failure.connect(_on_failure, weak=False, dispatch_uid="verisolve.metrics.failure")
    worker_process_shutdown.connect(
        _on_process_shutdown, weak=False, dispatch_uid="verisolve.metrics.shutdown"
    )


def _prepare_worker(worker: Any, port: int) -> None:
    """In the worker's main process, before the pool forks: clean up, then serve."""
    path = metrics.multiprocess_dir()
    if path is not None:
        removed = metrics.clear_stale_files(path)
        logger.info("metrics: multiprocess mode in %s (%d stale files removed)", path, removed)
    elif "prefork" in str(getattr(worker, "pool_cls", "")):
        logger.warning(
            "metrics: %s is not set, so /metrics shows only the main process and none of the "
            "pool's work; set it to an empty directory",
            metrics.MULTIPROC_ENV,
        )
    metrics.record_gpu_devices()
    if not port:
        return
    try:
        start_metrics_server(port)
    except OSError as exc:
        # Most often another worker on this host holds the port: this one still works, unwatched.
        logger.warning(
            "metrics: cannot serve /metrics on port %d (%s); give each worker on a host its own "
            "VERISOLVE_METRICS_PORT (0: none)",
            port,
            exc.strerror or exc,
        )
        return
    logger.info("metrics: serving /metrics on port %d", port)


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is None or task is None:
        return
    _started[task_id] = time.perf_counter()
    metrics.task_started(task.name)


def _on_postrun(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    started = _started.pop(task_id, None) if task_id is not None else None
    if started is None or task is None:
        return
    metrics.task_finished(task.name, state or "unknown", time.perf_counter() - started)


def _on_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if sender is not None and exception is not None:
        metrics.task_raised(sender.name, exception)


def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    # A child that exits cleanly drops its live gauges; the reaper covers the ones killed.
    path = metrics.multiprocess_dir()
    if path is not None:
        metrics.mark_dead(pid or os.getpid(), path)
