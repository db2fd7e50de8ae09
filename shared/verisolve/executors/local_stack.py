"""A Celery deployment on this machine: `verisolve relay` and workers as child processes.

The benchmark and the integration tests run one. Its queues carry a prefix of their own, so it
shares a broker with anything else; each process keeps a log and a Prometheus multiprocess
directory under the work directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from verisolve.executors.celery_app import (
    CeleryPublisher,
    dead_letter_queue,
    is_amqp,
    make_app,
    task_queues,
)
from verisolve.pipeline.routes import QueueName
from verisolve.settings import get_settings

COMMAND = [sys.executable, "-c", "from verisolve.cli.app import main; main()"]


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll until `condition()` holds; raise TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class LocalStack:
    """Relay and worker processes on one database and broker, under one queue prefix."""

    def __init__(
        self,
        database_url: str,
        broker_url: str,
        workdir: Path,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.prefix = f"local-{uuid.uuid4().hex[:8]}."
        self.env = {
            **os.environ,
            "VERISOLVE_DATABASE_URL": database_url,
            "VERISOLVE_BROKER_URL": broker_url,
            "VERISOLVE_QUEUE_PREFIX": self.prefix,
            "VERISOLVE_METRICS_PORT": "0",
            **(extra_env or {}),
        }
        settings = get_settings().model_copy(
            update={"broker_url": broker_url, "queue_prefix": self.prefix}
        )
        self.app = make_app(settings)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._count = 0
        self._labels: dict[str, str] = {}  # process name -> its latest log and metrics label

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Run `verisolve ARGS` in a process group of its own, with its log and metrics dir."""
        self._count += 1
        label = self._labels[name] = f"{name}-{self._count}"
        metrics_dir = self.workdir / "metrics" / label
        metrics_dir.mkdir(parents=True)
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        with open(self.workdir / f"{label}.log", "wb") as log:
            process = subprocess.Popen(
                [*COMMAND, *args],
                env=env,
                cwd=self.workdir,  # imports come from the installed package, not from cwd
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def start_worker(self, queue: QueueName, concurrency: int = 1) -> None:
        """A worker on one queue."""
        self.start(queue.value, "worker", queue.value, "--concurrency", str(concurrency))

    def start_relay(self, reconcile_every: float = 30, stale_after: float = 3900) -> None:
        """The relay and reconciler loop."""
        self.start(
            "relay",
            "relay",
            "--poll",
            "0.1",
            "--reconcile-every",
            str(reconcile_every),
            "--stale-after",
            str(stale_after),
        )

    def queue_consumers(self, queue: QueueName) -> int:
        """Consumers on a queue now (0 when it does not exist yet or the broker is down)."""
        stats = CeleryPublisher(self.app).queue_stats(queue.value)
        return 0 if stats is None else stats[1]

    def wait_ready(self, queues: list[QueueName], timeout: float = 60) -> None:
        """Wait until every queue has a consumer."""
        for queue in queues:
            self.wait(partial(self._has_consumer, queue), timeout, f"a {queue} worker")

    def _has_consumer(self, queue: QueueName) -> bool:
        if is_amqp(self.env["VERISOLVE_BROKER_URL"]):
            return self.queue_consumers(queue) > 0
        # Redis does not count consumers: the worker's log says when it consumes.
        log = self.workdir / f"{self._labels[queue.value]}.log"
        return log.is_file() and " ready." in log.read_text(errors="replace")

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """wait_for, failing early when a process died; the error holds every log's tail."""

        def done() -> bool:
            dead = [name for name, p in self.processes.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited\n{self.log_tail()}")
            return condition()

        try:
            wait_for(done, timeout, what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def kill(self, name: str) -> None:
        """SIGKILL a process and its children."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def kill_pool_child(self, name: str) -> int:
        """SIGKILL one pool process of a worker (the worker forks another); returns its pid."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.processes[name].pid)], capture_output=True, text=True
        )
        children = [int(pid) for pid in out.stdout.split()]
        if not children:
            raise RuntimeError(f"worker {name} has no pool process")
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def stop(self, timeout: float = 15) -> None:
        """Stop every process (TERM, a warm shutdown; then KILL)."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.processes.clear()

    def delete_queues(self) -> None:
        """Remove this stack's queues and exchanges from the broker."""
        amqp = is_amqp(self.env["VERISOLVE_BROKER_URL"])
        queues: list[Any] = task_queues(self.prefix, amqp)
        if amqp:
            queues.append(dead_letter_queue(self.prefix))
        exchanges = {queue.exchange.name: queue.exchange for queue in queues}
        with self.app.connection_for_write() as connection:
            channel = connection.default_channel
            for queue in queues:
                queue(channel).delete()
            for exchange in exchanges.values():
                exchange(channel).delete()

    def metric_sums(self, sample: str, label: str) -> dict[str, float]:
        """A sample's values from every process so far, summed by one label."""
        sums: dict[str, float] = {}
        for path in sorted((self.workdir / "metrics").iterdir()):
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
            for family in registry.collect():
                for s in family.samples:
                    if s.name == sample:
                        key = s.labels.get(label, "")
                        sums[key] = sums.get(key, 0.0) + s.value
        return sums

    def log_tail(self, chars: int = 3000) -> str:
        """The end of every process's log."""
        parts = [
            f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}"
            for path in sorted(self.workdir.glob("*.log"))
        ]
        return "\n".join(parts)
