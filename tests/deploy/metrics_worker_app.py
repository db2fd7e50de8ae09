"""A Celery app shaped like verisolve's workers, for the Prometheus end-to-end test.

Its task samples through a scripted generator wrapped, where it is loaded, by the real
instrumentation; `instrumentation.install` serves /metrics from the worker's main process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

from celery import Celery

from verisolve.executors import instrumentation
from verisolve.inference.sampling import SamplingParams
from verisolve.pipeline.stages import GeneratedCandidate, SamplingRequest

TOKENS_PER_CANDIDATE = 50

app = Celery("metrics-e2e", broker=os.environ["VERISOLVE_BROKER_URL"], set_as_current=False)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)
instrumentation.install(app)


class Scripted:
    """N candidates of fixed length; every fourth has no parsable answer."""

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        return [
            GeneratedCandidate(
                i,
                "I give up" if i % 4 == 3 else f"<<2*{i}={2 * i}>> #### {2 * i}",
                TOKENS_PER_CANDIDATE,
                "answer",
                calc_calls=1,
            )
            for i in range(request.sampling.n)
        ]


@lru_cache(maxsize=1)
def generator() -> instrumentation.InstrumentedGenerator:
    """Loaded once per process, after fork, like the real model loaders."""
    return instrumentation.instrument_generator(Scripted(), provider="cpu")


@app.task(name="e2e.generate")
def generate(n: int) -> int:
    """Sample one problem's candidates."""
    return len(
        generator().generate(SamplingRequest("q", "e2e", SamplingParams(n=n, max_new_tokens=64)))
    )
