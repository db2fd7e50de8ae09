"""The README's distributed recipe, step by step, against a new PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from dbtools import fresh_postgres_database
from verisolve.cli.app import app
from verisolve.db import create_engine, session_scope
from verisolve.modelstore.manifest import Manifest
from verisolve.settings import get_settings
from verisolve.tables import Job, JobStatus

pytestmark = pytest.mark.postgres
runner = CliRunner()


@pytest.fixture
def new_database(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty PostgreSQL database, configured as the README's recipe configures it."""
    with fresh_postgres_database(postgres_url, migrate=False) as url:  # same server
        monkeypatch.setenv("VERISOLVE_DATABASE_URL", url)
        get_settings.cache_clear()
        yield url


def installed_default_model() -> None:
    """The default model on disk, as `models install-default` leaves it (not built here)."""
    name = get_settings().default_generator
    target = get_settings().models_path / name
    target.mkdir(parents=True)
    (target / "model.onnx").write_bytes(b"onnx")
    (target / "tokenizer.json").write_text("{}")
    Manifest(kind="generator", name=name, files={"model.onnx": "1" * 64}).save(target)


def test_the_recipe_runs_as_written_on_a_new_database(new_database: str, tmp_path: Path) -> None:
    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"question": "What is 2 + 2?", "answer": "4"}\n', encoding="utf-8")
    submit = ["submit", str(problems), "-n", "100"]

    before = runner.invoke(app, submit)
    assert before.exit_code == 1
    assert "run `verisolve db upgrade`" in before.stderr

    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    unregistered = runner.invoke(app, submit)
    assert unregistered.exit_code == 1
    assert "--generator: no generator 'smollm2-135m-instruct' is registered" in unregistered.stderr

    installed_default_model()
    assert runner.invoke(app, ["models", "install-default"]).exit_code == 0
    result = runner.invoke(app, submit)
    assert result.exit_code == 0, result.output
    engine = create_engine(new_database)
    with session_scope(engine) as session:
        job = session.get_one(Job, int(result.stdout))
        assert (job.status, job.n_samples, job.generator) == (
            JobStatus.RUNNING,
            100,
            "smollm2-135m-instruct",
        )
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 1
    engine.dispose()
