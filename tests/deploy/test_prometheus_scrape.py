"""End to end: a real Prometheus scrapes a prefork Celery worker and `verisolve exporter`.

The worker runs the real recording path (instrumented generator, Celery signal handlers,
multiprocess files, /metrics from the main process); the exporter reads a job from PostgreSQL
and queue depths from RabbitMQ. PromQL over Prometheus's HTTP API must return the throughput
gauge, the exact token count summed over the pool's processes, and the job's metrics. The alert
rules are loaded too, and must evaluate without error against these series.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import kombu
import pytest
import sqlalchemy as sa
import yaml
from celery import Celery

from jobtools import make_job, spec
from verisolve.db import create_engine, session_scope
from verisolve.pipeline.jobs import mark_running
from verisolve.pipeline.stages import (
    GeneratedCandidate,
    SamplingRequest,
    aggregate_problem,
    generate_problem,
)
from verisolve.problems import ProblemIn
from verisolve.tables import Job, ModelArtifact

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parents[1] / "deploy" / "prometheus" / "alerts.yml"
TASKS, CANDIDATES, TOKENS = 6, 8, 50  # TOKENS matches metrics_worker_app.TOKENS_PER_CANDIDATE
DEADLINE_S = 45.0

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


class Fours:
    """A generator double whose candidates all answer 4."""

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        return [GeneratedCandidate(i, "#### 4", 3, "answer") for i in range(request.sampling.n)]


@pytest.fixture
def job_id(postgres_url: str) -> Iterator[int]:
    """A running job in PostgreSQL with 2 of its 4 problems done."""
    engine = create_engine(postgres_url)
    problems = [ProblemIn(f"p{i}", f"question {i}", "4", "4", i + 1) for i in range(4)]
    with session_scope(engine) as session:
        job = make_job(session, spec("fours", n_samples=2, name="e2e"), problems)
        ids, created = mark_running(session, job), job.id
    for problem_id in ids[:2]:
        with session_scope(engine) as session:
            generate_problem(session, problem_id, lambda _: Fours())
        with session_scope(engine) as session:
            aggregate_problem(session, problem_id)
    yield created
    with session_scope(engine) as session:
        session.execute(sa.delete(Job).where(Job.id == created))
        session.execute(sa.delete(ModelArtifact).where(ModelArtifact.name == "fours"))
    engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    """Child processes started by the test, stopped at its end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.running.append(
            subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        )

    def stop(self) -> None:
        for proc in self.running:
            proc.terminate()
        for proc in self.running:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs.glob("*.log"))


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop()


@pytest.fixture
def queues(rabbitmq_url: str) -> Iterator[tuple[str, str]]:
    """The worker's queue, and a queue holding 3 messages that nobody consumes."""
    work, waiting = f"e2e-work-{uuid.uuid4().hex[:8]}", f"e2e-wait-{uuid.uuid4().hex[:8]}"
    with kombu.Connection(rabbitmq_url) as conn:
        bound = kombu.Queue(waiting, routing_key=waiting)(conn.default_channel)
        bound.declare()
        for i in range(3):
            conn.Producer().publish({"i": i}, routing_key=waiting)
        yield work, waiting
        for name in (work, waiting):
            kombu.Queue(name)(conn.channel()).delete()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(
    base: str, promql: str, check: Callable[[list[float]], bool], procs: Processes
) -> list[float]:
    """Poll a query until its values pass `check`."""
    deadline, values = time.monotonic() + DEADLINE_S, []
    while time.monotonic() < deadline:
        try:
            values = [float(r["value"][1]) for r in query(base, promql)]
        except OSError:
            values = []
        if check(values):
            return values
        time.sleep(0.5)
    raise AssertionError(f"{promql} stayed at {values}\n{procs.output()}")


def test_prometheus_scrapes_the_worker_and_the_exporter(
    prometheus_bin: str,
    postgres_url: str,
    rabbitmq_url: str,
    job_id: int,
    queues: tuple[str, str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    work, waiting = queues
    worker_port, exporter_port, prometheus_port = free_port(), free_port(), free_port()
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = {
        **os.environ,
        "VERISOLVE_DATABASE_URL": postgres_url,
        "VERISOLVE_BROKER_URL": rabbitmq_url,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    worker_env = {
        **env,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "VERISOLVE_METRICS_PORT": str(worker_port),
    }
    processes.start(
        "worker",
        [sys.executable, "-m", "celery", "-A", "metrics_worker_app", "worker", "--pool=prefork",
         "--concurrency=2", f"--queues={work}", f"--hostname=e2e-{work}@%h", "--loglevel=WARNING",
         "--without-mingle", "--without-gossip", "--without-heartbeat"],
        worker_env,
        HERE,
    )  # fmt: skip
    processes.start(
        "exporter",
        [sys.executable, "-c", "from verisolve.cli.app import main; main()", "exporter",
         "--port", str(exporter_port), "--queue", waiting, "--queue", work],
        env,
        tmp_path,
    )  # fmt: skip
    start_prometheus(
        prometheus_bin, tmp_path, worker_port, exporter_port, prometheus_port, processes
    )
    sender = Celery("e2e-sender", broker=rabbitmq_url, set_as_current=False)
    for _ in range(TASKS):
        sender.send_task("e2e.generate", args=[CANDIDATES], queue=work)
    base = f"http://127.0.0.1:{prometheus_port}"

    wait_for(
        base,
        "sum(verisolve_generated_tokens_per_second)",
        lambda v: bool(v) and v[0] > 0,
        processes,
    )
    total = TASKS * CANDIDATES * TOKENS
    wait_for(base, "sum(verisolve_generated_tokens_total)", lambda v: v == [total], processes)
    wait_for(
        base,
        'sum(verisolve_tasks_total{task="e2e.generate",outcome="success"})',
        lambda v: v == [TASKS],
        processes,
    )
    unparsed = TASKS * (CANDIDATES // 4)
    wait_for(
        base, "sum(verisolve_answer_parse_failures_total)", lambda v: v == [unparsed], processes
    )
    wait_for(
        base,
        'verisolve_execution_provider_info{stage="generate",provider="cpu"}',
        lambda v: v == [1],
        processes,
    )
    key = str(job_id)
    wait_for(
        base, f'verisolve_job_progress_ratio{{job_id="{key}"}}', lambda v: v == [0.5], processes
    )
    wait_for(
        base,
        f'verisolve_job_accuracy_ratio{{job_id="{key}",strategy="majority"}}',
        lambda v: v == [1.0],
        processes,
    )
    wait_for(base, f'verisolve_queue_messages{{queue="{waiting}"}}', lambda v: v == [3], processes)
    assert_rules_evaluate(base, processes)


def start_prometheus(
    binary: str, tmp: Path, worker: int, exporter: int, port: int, procs: Processes
) -> None:
    shutil.copy(ALERTS, tmp / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "verisolve-workers",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{worker}"], "labels": {"pool": "generator"}}
                ],
            },
            {
                "job_name": "verisolve-exporter",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter}"]}],
            },
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    procs.start(
        "prometheus",
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        dict(os.environ),
        tmp,
    )  # fmt: skip


def assert_rules_evaluate(base: str, procs: Processes) -> None:
    deadline, health = time.monotonic() + DEADLINE_S, {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as response:
            groups = json.load(response)["data"]["groups"]
        health = {
            r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]
        }
        if health and all(state == "ok" for state, _ in health.values()):
            return
        time.sleep(0.5)
    raise AssertionError(f"alert rules did not all evaluate: {health}\n{procs.output()}")
