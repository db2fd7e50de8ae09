"""`verisolve bench ingest`: synthetic problems through a real API server into PostgreSQL."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from verisolve.answers import parse_gold
from verisolve.cli.app import app
from verisolve.cli.bench_ingest import synthetic_problem, write_problems
from verisolve.db import create_engine
from verisolve.problems import load_problems
from verisolve.tables import ApiKey, Job

runner = CliRunner()


def test_synthetic_problems_are_valid_and_their_answers_right(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    write_problems(path, 200)
    problems = load_problems(path)
    assert len(problems) == 200
    rng = random.Random(1)
    for i in range(50):
        problem = synthetic_problem(i, rng)
        numbers = [int(w) for w in problem["question"].replace(".", " ").split() if w.isdigit()]
        have, boxes, per_box, given = numbers
        assert parse_gold(problem["answer"]) == str(have + boxes * per_box - given)
        assert int(problem["answer"]) > 0


@pytest.mark.postgres
def test_bench_ingest_uploads_through_the_api_and_cleans_up(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", postgres_url)
    result = runner.invoke(app, ["bench", "ingest", "--n", "300", "--chunk-lines", "100", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["problems"], figures["database"]) == (300, "postgresql")
    assert figures["problems_per_s"] > 0
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).where(Job.id == figures["job_id"])) == 0
        bench_keys = sa.select(sa.func.count()).where(ApiKey.name == "bench ingest")
        assert conn.scalar(bench_keys) == 0
    engine.dispose()
