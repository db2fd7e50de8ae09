"""`verisolve submit | status | resume | cancel` against the configured database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.db import get_engine, session_scope
from verisolve.db.migrate import upgrade
from verisolve.tables import Job, JobStatus, ModelArtifact, OutboxMessage, Problem

runner = CliRunner()
LINES = [
    '{"id": "a", "question": "Ann has 3 pens and buys 4 more. How many pens?", "answer": "7"}',
    '{"id": "b", "question": "A box holds 6 eggs. How many eggs in 2 boxes?", "answer": "12"}',
]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('jobs') / 'jobs.db'}"
    upgrade(url)
    return url


@pytest.fixture
def db(migrated: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    """The configured database for the command, with a generator "g"; emptied afterwards."""
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", migrated)
    engine = get_engine(migrated)
    with session_scope(engine) as session:
        session.add(ModelArtifact(kind="generator", name="g", path="/x", sha256="0", manifest={}))
    yield engine
    with session_scope(engine) as session:
        session.execute(sa.delete(Job))
        session.execute(sa.delete(OutboxMessage))
        session.execute(sa.delete(ModelArtifact))


@pytest.fixture
def problems_file(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def submit(path: Path, *options: str) -> int:
    result = runner.invoke(app, ["submit", str(path), "--generator", "g", *options])
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip())


def test_submit_creates_a_running_job_and_enqueues_its_problems(
    db: sa.Engine, problems_file: Path
) -> None:
    job_id = submit(problems_file, "-n", "4", "--temperature", "0.5", "--verifier", "none")
    with session_scope(db) as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.n_problems, job.n_samples, job.temperature) == (
            JobStatus.RUNNING,
            2,
            4,
            0.5,
        )
        assert (job.name, job.verifier, job.strategy) == ("problems.jsonl", None, "majority")
        problem_ids = set(session.scalars(sa.select(Problem.id)))
        keys = set(session.scalars(sa.select(OutboxMessage.dedupe_key)))
    assert keys == {f"generate:{i}" for i in problem_ids}


@pytest.mark.parametrize(
    ("lines", "options", "message"),
    [
        (['{"question": "Q?"}', '{"questio": "Q?"}'], [], "line 2"),
        (LINES, ["--strategy", "verifier", "--verifier", "none"], "needs a verifier"),
        (LINES, ["--top-p", "0"], "top_p"),
        (LINES, ["--verifier", "g"], "--verifier: no verifier 'g' is registered"),
        (LINES, ["--generator", "nope"], "--generator: no generator 'nope' is registered"),
        (LINES, ["--generator", "../../etc/passwd"], "'../../etc/passwd' is not a model name"),
        (LINES, ["--verifier", "/etc"], "--verifier: '/etc' is not a model name"),
        (LINES, ["--generator", ""], "--generator: '' is not a model name"),
        (LINES, ["--verifier", " "], "--verifier: ' ' is not a model name"),
        (LINES, ["-n", "5000"], "n_samples 5,000 is over the limit of 1,000"),
        ([], [], "holds no problems"),
    ],
)
def test_a_bad_submission_writes_nothing(
    db: sa.Engine, tmp_path: Path, lines: list[str], options: list[str], message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["submit", str(path), "--generator", "g", *options])
    assert result.exit_code == 1
    assert message in result.stderr
    with session_scope(db) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) == 0


def test_status_reports_progress(db: sa.Engine, problems_file: Path) -> None:
    job_id = submit(problems_file)
    result = runner.invoke(app, ["status", str(job_id), "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    assert (state["status"], state["n_done"], state["n_problems"]) == ("running", 0, 2)
    assert state["problems"] == {"pending": 2}
    table = runner.invoke(app, ["status", str(job_id)])
    assert "0 / 2 problems" in table.stdout


def test_cancel_then_resume(db: sa.Engine, problems_file: Path) -> None:
    job_id = submit(problems_file)
    with session_scope(db) as session:
        session.execute(sa.update(OutboxMessage).values(sent_at=sa.func.now()))
    resumed = runner.invoke(app, ["resume", str(job_id)])
    assert resumed.exit_code == 0, resumed.output
    assert "2 step(s) enqueued" in resumed.stdout
    with session_scope(db) as session:
        assert session.scalars(sa.select(OutboxMessage.sent_at)).all() == [None, None]
    assert runner.invoke(app, ["cancel", str(job_id)]).exit_code == 0
    assert runner.invoke(app, ["cancel", str(job_id)]).exit_code == 0  # it stays cancelled
    refused = runner.invoke(app, ["resume", str(job_id)])
    assert refused.exit_code == 1
    assert "nothing to resume" in refused.stderr


@pytest.mark.parametrize("command", ["status", "resume", "cancel"])
def test_an_unknown_job_is_an_error(db: sa.Engine, command: str) -> None:
    result = runner.invoke(app, [command, "999999"])
    assert result.exit_code == 1
    assert "no job 999999" in result.stderr


def test_an_unmigrated_database_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    result = runner.invoke(app, ["status", "1"])
    assert result.exit_code == 1
    assert "verisolve db upgrade" in result.stderr


def test_a_gpu_worker_without_the_cuda_provider_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    monkeypatch.setenv("VERISOLVE_PROVIDER", "cuda")
    result = runner.invoke(app, ["worker", "generate"])
    assert result.exit_code == 1
    assert "provider 'cuda' asked for" in result.stderr
