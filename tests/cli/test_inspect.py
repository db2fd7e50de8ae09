"""`verisolve inspect`: the inspector on the local database, open without an API key."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from jobtools import make_job, spec
from verisolve.cli.app import app
from verisolve.db import get_engine, session_scope
from verisolve.db.migrate import prepare_schema
from verisolve.problems import ProblemIn


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What uvicorn.run was asked to serve (nothing listens)."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    return seen


def local_job(owner: str = "local") -> int:
    engine = get_engine()
    prepare_schema(engine)
    problem = ProblemIn("p1", "What is 2 + 2?", "4", "4", 1)
    with session_scope(engine) as session:
        return make_job(session, spec("g", owner=owner), [problem]).id


def test_inspect_serves_the_local_jobs_without_a_key(served: dict[str, Any]) -> None:
    job_id = local_job()
    result = CliRunner().invoke(app, ["inspect", str(job_id), "--port", "8799"])
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:8799/ui/jobs/{job_id}" in result.output
    assert served["port"] == 8799
    with TestClient(served["app"]) as client:
        page = client.get(f"/ui/jobs/{job_id}")
        assert page.status_code == 200
        assert "What is 2 + 2?" in page.text
        assert "local database" in page.text
        assert f'href="/ui/jobs/{job_id}"' in client.get("/ui/jobs").text


def test_inspect_refuses_an_unknown_job(served: dict[str, Any]) -> None:
    other = local_job(owner="someone-else")
    for job_id in (other, other + 1000):
        result = CliRunner().invoke(app, ["inspect", str(job_id)])
        assert result.exit_code == 1
        assert f"no job {job_id}" in result.output
    assert "app" not in served
