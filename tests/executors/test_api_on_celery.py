"""End to end: a job submitted through the API runs on Celery workers (PostgreSQL, RabbitMQ, a
tiny real model), and its answers come back through `verisolve results --api`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_celery_integration import (  # noqa: F401  (module fixtures: the models and the stack)
    GENERATOR,
    VERIFIER,
    db,
    registered,
    stack,
    tiny_models,
    wait_done,
    write_problems,
)
from typer.testing import CliRunner

from live_api import live_api
from verisolve.apikeys import create_key
from verisolve.cli.app import app
from verisolve.cli.remote import submit_remote
from verisolve.db import session_scope
from verisolve.executors.local_stack import LocalStack
from verisolve.inference.sampling import SamplingParams
from verisolve.pipeline import JobSpec

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]
runner = CliRunner()


def test_a_job_submitted_through_the_api_is_solved_by_the_workers(
    db: sa.Engine,  # noqa: F811
    stack: LocalStack,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with session_scope(db) as session:
        monkeypatch.setenv("VERISOLVE_API_KEY", create_key(session, "e2e").token)
    problems = write_problems(tmp_path / "problems.jsonl", 4)
    spec = JobSpec(GENERATOR, VERIFIER, SamplingParams(n=2, max_new_tokens=24))
    with live_api(db) as url:
        job_id = submit_remote(url, problems, spec)
        wait_done(db, stack, job_id)
        out = tmp_path / "answers.jsonl"
        result = runner.invoke(app, ["results", str(job_id), "-o", str(out), "--api", url])
        assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["q00", "q01", "q02", "q03"]
    assert all("status" not in r for r in rows)  # every problem is done
    assert {r["strategy"] for r in rows} == {"topk-vote"}
