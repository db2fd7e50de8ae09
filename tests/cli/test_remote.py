"""The CLI through the submission service: submit, status, results and report over HTTP.

A real uvicorn server (tests/cli/live_api.py) serves a SQLite database; the same database is
the configured one, so the rows the API returns can be compared with the database's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from jobtools import register_fake
from live_api import live_api
from verisolve.apikeys import create_key
from verisolve.cli.app import app
from verisolve.cli.remote import report_remote, status_remote
from verisolve.db import get_engine, session_scope
from verisolve.db.migrate import upgrade
from verisolve.evaluation import evaluate
from verisolve.executors.inline import InlineExecutor
from verisolve.pipeline.stages import (
    CandidateScorer,
    GeneratedCandidate,
    SamplingRequest,
    job_candidates,
)
from verisolve.settings import get_settings
from verisolve.tables import Job, JobStatus, OutboxMessage, Problem

runner = CliRunner()
QUESTIONS = [f"Sam packs {n} bags with 3 pears each. How many pears?" for n in range(1, 6)]
LINES = [json.dumps({"question": q, "answer": str(3 * n)}) for n, q in enumerate(QUESTIONS, 1)]


class TimesThree:
    """A generator double: right on every sample but the second, which is off by one."""

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        n = int(request.question.split()[2])
        answers = [3 * n + (i == 1) for i in range(request.sampling.n)]
        return [GeneratedCandidate(i, f"#### {a}", 3, "answer") for i, a in enumerate(answers)]


def no_verifier(name: str) -> CandidateScorer:
    raise AssertionError(f"these jobs have no verifier, yet {name!r} was asked for")


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    """The configured database, served by the API; a key in VERISOLVE_API_KEY."""
    url = f"sqlite:///{tmp_path / 'remote.db'}"
    upgrade(url)
    engine = get_engine(url)
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", url)
    with session_scope(engine) as session:
        monkeypatch.setenv("VERISOLVE_API_KEY", create_key(session, "remote").token)
        register_fake(session, get_settings().default_generator, "generator")
    monkeypatch.setattr("verisolve.client.CHUNK_LINES", 2)  # several chunks from a small file
    with live_api(engine) as base_url:
        monkeypatch.setenv("VERISOLVE_API_URL", base_url)
        yield engine


def write(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def submit(path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["submit", str(path), "-n", "3", "--verifier", "none"])
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip()), result.stderr


def test_submit_uploads_in_chunks_starts_and_is_safe_to_run_again(
    served: sa.Engine, tmp_path: Path
) -> None:
    path = write(tmp_path / "pears.jsonl", LINES)
    job_id, message = submit(path)
    assert "5 problems (5 uploaded now, 0 before), started" in message
    with session_scope(served) as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.n_problems, job.owner, job.name) == (
            JobStatus.RUNNING,
            5,
            "remote",
            "pears.jsonl",
        )
        ids = session.scalars(sa.select(Problem.id).where(Problem.job_id == job_id)).all()
        queued = session.scalars(sa.select(OutboxMessage.dedupe_key)).all()
    assert sorted(queued) == sorted(f"generate:{i}" for i in ids)
    again, message = submit(path)
    assert again == job_id
    assert "submitted before" in message


def test_bad_lines_are_all_reported_and_the_job_is_cancelled(
    served: sa.Engine, tmp_path: Path
) -> None:
    lines = [*LINES[:2], '{"question": ""}', *LINES[2:4], '{"question": "Q", "answer": "x"}']
    result = runner.invoke(app, ["submit", str(write(tmp_path / "bad.jsonl", lines))])
    assert result.exit_code == 1
    assert "line 3: question: empty" in result.stderr
    assert "line 6: answer: not a number" in result.stderr
    assert "2 bad line(s)" in result.stderr
    assert "was cancelled" in result.stderr
    with session_scope(served) as session:
        job = session.scalars(sa.select(Job)).one()
        query = sa.select(Problem.line_no).where(Problem.job_id == job.id).order_by(Problem.id)
        assert (job.status, list(session.scalars(query))) == (JobStatus.CANCELLED, [1, 2])


def test_results_and_report_through_the_api_match_the_database(
    served: sa.Engine, tmp_path: Path
) -> None:
    job_id, _ = submit(write(tmp_path / "pears.jsonl", LINES))
    state = status_remote(os.environ["VERISOLVE_API_URL"], job_id)
    assert (state["status"], state["problems"]) == ("running", {"pending": 5})
    early = tmp_path / "early.jsonl"
    for env in ({}, {"VERISOLVE_API_URL": ""}):  # through the service, then the database
        result = runner.invoke(app, ["results", str(job_id), "-o", str(early)], env=env)
        assert result.exit_code == 0, result.output
        said = " ".join(result.stderr.split())
        assert f"job {job_id}: 5 answer lines written to" in said  # a line each, none answered
        assert (
            f'job {job_id} (running): 0 of 5 problems done; the others\' lines have "status" '
            "and no answer" in said
        )
        assert {json.loads(line)["status"] for line in early.read_text().splitlines()} == {
            "pending"
        }
    InlineExecutor(served, lambda _: TimesThree(), no_verifier).run(job_id)

    for extra, name in (([], "answers"), (["--candidates"], "candidates")):
        via_api, via_db = tmp_path / f"api-{name}.jsonl", tmp_path / f"db-{name}.jsonl"
        remote = runner.invoke(app, ["results", str(job_id), "-o", str(via_api), *extra])
        assert remote.exit_code == 0, remote.output
        local = runner.invoke(
            app, ["results", str(job_id), "-o", str(via_db), *extra], env={"VERISOLVE_API_URL": ""}
        )
        assert local.exit_code == 0, local.output
        assert "problems done" not in remote.stderr + local.stderr
        assert via_api.read_bytes() == via_db.read_bytes()
    answers = [
        json.loads(line) for line in (tmp_path / "api-answers.jsonl").read_text().splitlines()
    ]
    assert [(a["answer"], a["correct"]) for a in answers] == [
        (str(3 * n), True) for n in range(1, 6)
    ]
    assert len((tmp_path / "api-candidates.jsonl").read_text().splitlines()) == 15

    report = report_remote(os.environ["VERISOLVE_API_URL"], job_id)
    with session_scope(served) as session:
        job = session.get_one(Job, job_id)
        expected = evaluate(job_candidates(session, job_id), k=job.vote_k, seed=job.seed)
    assert report == expected


def test_errors_of_the_service_exit_1(
    served: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = str(tmp_path / "x.jsonl")
    missing = runner.invoke(app, ["results", "424242", "-o", out])
    assert missing.exit_code == 1
    assert "no job 424242" in missing.stderr
    wrong = runner.invoke(app, ["results", "1", "-o", out], env={"VERISOLVE_API_KEY": "vs_nope"})
    assert wrong.exit_code == 1
    assert "HTTP 401" in wrong.stderr
    unset = runner.invoke(app, ["results", "1", "-o", out], env={"VERISOLVE_API_KEY": ""})
    assert unset.exit_code == 1
    assert "VERISOLVE_API_KEY is not set" in unset.stderr
    monkeypatch.setattr(time, "sleep", lambda _: None)  # the client's backoff
    down = runner.invoke(app, ["results", "1", "-o", out, "--api", "http://127.0.0.1:9"])
    assert down.exit_code == 1
    assert "cannot reach the service" in down.stderr
