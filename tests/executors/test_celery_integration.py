"""Jobs on real Celery workers (subprocesses), PostgreSQL and RabbitMQ, with a real tiny model.

The job matches the inline executor's answers for the same seed, and survives a generator worker
killed with SIGKILL and a RabbitMQ restart: no problem lost, no candidate or metric twice.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.db import create_engine, session_scope
from verisolve.db.migrate import upgrade
from verisolve.executors.inline import InlineExecutor
from verisolve.executors.local_stack import LocalStack
from verisolve.inference.sampling import SamplingParams
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest
from verisolve.pipeline import JobSpec, create_job
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.routes import QueueName
from verisolve.problems import load_problems
from verisolve.tables import Candidate, Job, JobStatus, Problem, ProblemStatus, Selection

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]
runner = CliRunner()
GENERATOR, VERIFIER = "tiny-celery-generator", "tiny-celery-verifier"
JOB_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random generator and verifier, exported as verisolve model directories."""
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.tiny import build_tiny_model
    from verisolve.modelstore.verifier_export import export_verifier

    root = tmp_path_factory.mktemp("celery-models")
    generator_hf = build_tiny_model(root / "gen-hf")
    verifier_hf = build_tiny_model(root / "ver-hf", head="sequence-classification")
    export_generator(generator_hf, root / "generator", name=GENERATOR, stop=["\n\n"])
    export_verifier(verifier_hf, root / "verifier", name=VERIFIER)
    return {GENERATOR: root / "generator", VERIFIER: root / "verifier"}


@pytest.fixture(scope="module")
def registered(private_postgres_url: str, tiny_models: dict[str, Path]) -> str:
    """This module's database, with the tiny models in its registry."""
    engine = create_engine(private_postgres_url)
    with session_scope(engine) as session:
        for path in tiny_models.values():
            registry.register(session, Manifest.load(path), path)
    engine.dispose()
    return private_postgres_url


@pytest.fixture(scope="module")
def stack(
    registered: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """The relay and one worker per queue, running."""
    env = {
        "VERISOLVE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "OMP_NUM_THREADS": "1",
    }
    celery = LocalStack(registered, rabbitmq_url, tmp_path_factory.mktemp("celery"), env)
    # A quick reconciler: work lost for 15 s is enqueued again.
    celery.start_relay(reconcile_every=2, stale_after=15)
    for queue in QueueName:
        celery.start_worker(queue)
    try:
        celery.wait_ready(list(QueueName))
        yield celery
    finally:
        celery.stop()
        celery.delete_queues()


@pytest.fixture
def db(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    """This process configured like the workers (the CLI and the loaders read the settings)."""
    for key in ("VERISOLVE_DATABASE_URL", "VERISOLVE_BROKER_URL", "VERISOLVE_QUEUE_PREFIX"):
        monkeypatch.setenv(key, stack.env[key])
    engine = create_engine(stack.env["VERISOLVE_DATABASE_URL"])
    yield engine
    engine.dispose()


def write_problems(path: Path, n: int) -> Path:
    """n small word problems of our own, with gold answers."""
    lines = []
    for i in range(n):
        a, b = 3 + i, 2 + (i * 7) % 11
        question = (
            f"Mia has {a} boxes with {b} pencils in each box. How many pencils does she have?"
        )
        lines.append(f'{{"id": "q{i:02d}", "question": "{question}", "answer": "{a * b}"}}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def submit(path: Path, *options: str) -> int:
    result = runner.invoke(
        app, ["submit", str(path), "--generator", GENERATOR, "--verifier", VERIFIER, *options]
    )
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip())


def job_state(engine: sa.Engine, job_id: int) -> tuple[str, int, int]:
    with session_scope(engine) as session:
        job = session.get_one(Job, job_id)
        return job.status, job.n_done, job.n_problems


def wait_done(engine: sa.Engine, stack: LocalStack, job_id: int) -> None:
    stack.wait(lambda: job_state(engine, job_id)[0] == JobStatus.DONE, JOB_TIMEOUT_S, "the job")


def count_where(engine: sa.Engine, job_id: int, *conditions: Any) -> int:
    with session_scope(engine) as session:
        query = sa.select(sa.func.count()).select_from(Problem).where(Problem.job_id == job_id)
        return int(session.scalar(query.where(*conditions)) or 0)


def results(engine: sa.Engine, job_id: int) -> dict[str, Any]:
    """Every candidate and selection of a job, keyed by natural keys."""
    with session_scope(engine) as session:
        candidates = session.execute(
            sa.select(Problem.external_id, Candidate.sample_index, Candidate.text, Candidate.score)
            .join(Candidate, Candidate.problem_id == Problem.id)
            .where(Problem.job_id == job_id)
        ).all()
        selections = session.execute(
            sa.select(
                Problem.external_id,
                Selection.strategy,
                Selection.answer,
                Selection.sample_index,
                Selection.confidence,
            )
            .join(Selection, Selection.problem_id == Problem.id)
            .where(Problem.job_id == job_id)
        ).all()
        metrics = session.get_one(Job, job_id).metrics
    return {
        "candidates": {(e, i): (text, round(score, 5)) for e, i, text, score in candidates},
        "selections": {
            (e, s): (a, i, None if c is None else round(c, 5)) for e, s, a, i, c in selections
        },
        "n_candidates": len(candidates),
        "n_selections": len(selections),
        "metrics": metrics,
    }


def assert_complete(engine: sa.Engine, job_id: int, n_problems: int, n_samples: int) -> None:
    """Nothing lost, nothing twice."""
    status, n_done, total = job_state(engine, job_id)
    assert (status, n_done, total) == (JobStatus.DONE, n_problems, n_problems)
    found = results(engine, job_id)
    assert found["n_candidates"] == len(found["candidates"]) == n_problems * n_samples
    assert found["n_selections"] == len(found["selections"])
    assert len({e for e, _ in found["selections"]}) == n_problems
    assert found["metrics"]["n_problems"] == n_problems
    assert found["metrics"]["n_candidates"] == n_problems * n_samples


def test_workers_started_together_set_up_delayed_delivery(stack: LocalStack) -> None:
    """Each worker declares every queue first, so Celery binds them all for delayed delivery."""
    logs = {path.name: path.read_text(errors="replace") for path in stack.workdir.glob("*.log")}
    assert {name.split("-")[0] for name in logs} >= {q.value for q in QueueName}
    for name, log in logs.items():
        assert "Failed to bind queue" not in log, name
        assert "Failed to setup delayed delivery" not in log, name


def test_a_celery_job_matches_the_inline_executor(
    db: sa.Engine, stack: LocalStack, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    from verisolve.executors.loading import load_generator, load_scorer

    problems_file = write_problems(tmp_path / "problems.jsonl", 24)
    options = ("-n", "4", "--max-new-tokens", "24", "--temperature", "0.9", "--seed", "11")
    job_id = submit(problems_file, *options)
    wait_done(db, stack, job_id)
    assert_complete(db, job_id, n_problems=24, n_samples=4)

    inline_url = f"sqlite:///{tmp_path / 'inline.db'}"
    upgrade(inline_url)
    inline_engine = create_engine(inline_url)
    sampling = SamplingParams(n=4, max_new_tokens=24, temperature=0.9, seed=11)
    spec = JobSpec(GENERATOR, VERIFIER, sampling, name="problems.jsonl")
    with session_scope(inline_engine) as session:
        for path in tiny_models.values():
            registry.register(session, Manifest.load(path), path)
        job, _ = create_job(session, spec, load_problems(problems_file), limits=JobLimits())
        inline_id = job.id
    InlineExecutor(inline_engine, load_generator, load_scorer).run(inline_id)
    celery, inline = results(db, job_id), results(inline_engine, inline_id)
    inline_engine.dispose()
    assert celery["candidates"] == inline["candidates"]
    assert celery["selections"] == inline["selections"]
    assert celery["metrics"]["strategies"] == inline["metrics"]["strategies"]


def test_a_job_survives_a_killed_generator_worker(
    db: sa.Engine, stack: LocalStack, tmp_path: Path
) -> None:
    problems_file = write_problems(tmp_path / "problems.jsonl", 30)
    job_id = submit(problems_file, "-n", "8", "--max-new-tokens", "160", "--seed", "3")
    not_pending = Problem.status != ProblemStatus.PENDING
    stack.wait(lambda: count_where(db, job_id, not_pending) >= 3, 60, "some generation")
    # A pool process dies mid-task: the worker requeues its message (reject_on_worker_lost).
    stack.kill_pool_child("generate")
    stack.wait(lambda: count_where(db, job_id, not_pending) >= 12, 60, "more generation")
    # The whole worker dies: the broker requeues its unacknowledged message.
    stack.kill("generate")
    assert count_where(db, job_id, Problem.status == ProblemStatus.DONE) < 30
    stack.start_worker(QueueName.GENERATE)
    wait_done(db, stack, job_id)
    assert_complete(db, job_id, n_problems=30, n_samples=8)


def test_a_job_survives_a_rabbitmq_restart(
    db: sa.Engine, stack: LocalStack, tmp_path: Path
) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        pytest.skip("rabbitmqctl is not on PATH: cannot restart RabbitMQ")
    problems_file = write_problems(tmp_path / "problems.jsonl", 30)
    job_id = submit(problems_file, "-n", "8", "--max-new-tokens", "160", "--seed", "5")
    not_pending = Problem.status != ProblemStatus.PENDING
    stack.wait(lambda: count_where(db, job_id, not_pending) >= 3, 60, "some generation")
    subprocess.run([rabbitmqctl, "stop_app"], check=True, capture_output=True, timeout=60)
    try:
        assert count_where(db, job_id, Problem.status == ProblemStatus.DONE) < 30
    finally:
        subprocess.run([rabbitmqctl, "start_app"], check=True, capture_output=True, timeout=60)
    wait_done(db, stack, job_id)
    assert_complete(db, job_id, n_problems=30, n_samples=8)


def test_a_job_runs_on_redis(
    registered: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("redis")
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        pytest.skip("Redis is not reachable on 127.0.0.1:6379 (an optional broker)")
    env = {"VERISOLVE_DATA_DIR": str(tmp_path / "data")}
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", registered)
    redis = LocalStack(registered, "redis://127.0.0.1:6379/15", tmp_path / "redis", env)
    engine = create_engine(registered)
    try:
        redis.start_relay()
        for queue in QueueName:
            redis.start_worker(queue)
        redis.wait_ready(list(QueueName))
        job_id = submit(write_problems(tmp_path / "problems.jsonl", 6), "-n", "3")
        wait_done(engine, redis, job_id)
        assert_complete(engine, job_id, n_problems=6, n_samples=3)
    finally:
        redis.stop()
        redis.delete_queues()
        engine.dispose()
