"""`verisolve solve` end to end on a tiny real model: answers, report, resume after Ctrl-C."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.db import get_engine, session_scope
from verisolve.executors import loading
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest
from verisolve.tables import Candidate, Job, Problem

SAMPLES = (
    Path(__file__).resolve().parents[2] / "shared" / "verisolve" / "data" / "sample_problems.jsonl"
)
runner = CliRunner()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama exported as a generator, with a stop string."""
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("solve-model")
    hf = build_tiny_model(root / "hf")
    export_generator(hf, root / "tiny", name="tiny", stop=["\n\n"])
    return root / "tiny"


@pytest.fixture
def registered(tiny_model: Path) -> str:
    from verisolve.db.migrate import prepare_schema

    prepare_schema(get_engine())
    with session_scope() as session:
        registry.register(session, Manifest.load(tiny_model), tiny_model)
    loading.load_generator.cache_clear()
    return "tiny"


def solve(tmp_path: Path, *extra: str) -> tuple[int, str]:
    out = tmp_path / "answers.jsonl"
    args = ["solve", str(SAMPLES), "--generator", "tiny", "-n", "3", "--max-new-tokens", "12"]
    result = runner.invoke(app, [*args, "-o", str(out), *extra])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_solve_writes_one_answer_per_problem(tmp_path: Path, registered: str) -> None:
    code, output = solve(tmp_path)
    assert code == 0, output
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows][:2] == ["bakery", "stickers"]
    assert len(rows) == 10
    assert all(r["strategy"] == "majority" and "correct" in r for r in rows)
    assert "coverage (test@N)" in output
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Candidate)) == 30


def test_solve_resumes_after_an_interrupt(
    tmp_path: Path, registered: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = loading.load_generator("tiny")
    calls = {"n": 0}

    class InterruptedAfterFour:
        def generate(self, request):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] > 4:
                raise KeyboardInterrupt
            return real.generate(request)

    monkeypatch.setattr(loading, "load_generator", lambda name: InterruptedAfterFour())
    code, output = solve(tmp_path)
    assert code == 130
    assert "resume" in output
    assert not (tmp_path / "answers.jsonl").exists()
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Candidate)) == 12
    monkeypatch.undo()
    code, output = solve(tmp_path)
    assert code == 0, output
    assert "Resuming job" in output
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(Candidate)) == 30
        assert session.scalar(sa.select(Job.status)) == "done"
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == 10


def test_solve_rejects_a_bad_file_and_writes_nothing(tmp_path: Path, registered: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok?"}\n{"question": ""}\nnot json\n')
    result = runner.invoke(app, ["solve", str(bad), "--generator", "tiny"])
    assert result.exit_code == 1
    assert "line 2" in result.output
    assert "line 3" in result.output
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def test_solve_same_job_twice_does_not_generate_again(tmp_path: Path, registered: str) -> None:
    assert solve(tmp_path)[0] == 0
    code, output = solve(tmp_path)
    assert code == 0
    assert "Resuming job" in output
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Candidate)) == 30


def test_a_model_replaced_under_its_name_makes_a_new_job(
    tmp_path: Path, registered: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.tiny import build_tiny_model

    assert solve(tmp_path)[0] == 0
    root = tmp_path_factory.mktemp("retrained")
    hf = build_tiny_model(root / "hf", seed=1)  # other weights, the same name
    manifest = export_generator(hf, root / "tiny", name="tiny", stop=["\n\n"])
    with session_scope() as session:
        replaced = registry.register(session, manifest, root / "tiny")
    assert replaced.change is registry.Change.REPLACED
    loading.load_generator.cache_clear()
    code, output = solve(tmp_path)
    assert code == 0, output
    assert "Resuming job" not in output
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 2
        assert session.scalar(sa.select(sa.func.count()).select_from(Candidate)) == 60
    # and the retrained model's job is the one found again
    assert "Resuming job 2" in solve(tmp_path)[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--generator", "../../etc/passwd"],
            "--generator: '../../etc/passwd' is not a model name",
        ),
        (["--generator", "/etc"], "--generator: '/etc' is not a model name"),
        (["--generator", "~"], "--generator: '~' is not a model name"),
        (["--generator", ""], "--generator: '' is not a model name"),
        (["--generator", "tiny", "--verifier", "../v"], "--verifier: '../v' is not a model name"),
        (["--generator", "tiny", "--verifier", " "], "--verifier: ' ' is not a model name"),
        (["--generator", "unknown-model"], "no model 'unknown-model' is registered"),
    ],
)
def test_solve_refuses_a_model_that_is_not_a_registered_name_in_one_line(
    registered: str, options: list[str], message: str
) -> None:
    result = runner.invoke(app, ["solve", str(SAMPLES), *options])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_solve_serves_the_workers_metrics(tmp_path: Path, registered: str) -> None:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, output = solve(tmp_path, "--metrics-port", str(port))
    assert code == 0, output
    assert f"http://127.0.0.1:{port}/metrics" in output
    # The server thread outlives the command in this process, so what it recorded is readable.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'verisolve_tasks_total{outcome="success",task="verisolve.generate"}' in text
    assert 'verisolve_problems_processed_total{stage="generate"}' in text
    assert "verisolve_generated_tokens_total" in text


def test_a_solved_job_opens_in_the_inspector(tmp_path: Path, registered: str) -> None:
    from fastapi.testclient import TestClient

    from verisolve.cli.inspect import inspect_app
    from verisolve.tables import Problem

    code, output = solve(tmp_path)
    assert code == 0, output
    with session_scope() as session:
        job_id = session.scalar(sa.select(Job.id))
        problem_ids = list(session.scalars(sa.select(Problem.id).where(Problem.job_id == job_id)))
    assert job_id is not None
    app, path = inspect_app(job_id)
    with TestClient(app) as client:
        page = client.get(path)
        assert page.status_code == 200
        assert "bakery" in page.text
        for problem_id in problem_ids:
            answered = client.get(f"/ui/jobs/{job_id}/problems/{problem_id}")
            assert answered.status_code == 200
            assert answered.text.count('class="candidate"') == 3


def test_the_first_n_candidates_of_a_larger_job_are_the_job_of_n(registered: str) -> None:
    """What `report --samples N` rests on: a candidate depends on its sample index, not on N."""
    base = ["solve", str(SAMPLES), "--generator", "tiny", "--max-new-tokens", "12"]
    for n in ("6", "3"):
        result = runner.invoke(app, [*base, "-n", n, "--seed", "5"])
        assert result.exit_code == 0, result.output
    with session_scope() as session:
        rows = session.execute(
            sa.select(Problem.job_id, Problem.external_id, Candidate.sample_index, Candidate.text)
            .join(Candidate, Candidate.problem_id == Problem.id)
            .order_by(Problem.job_id, Problem.id, Candidate.sample_index)
        ).all()
    large = {(ext, i): text for job, ext, i, text in rows if job == 1}
    small = {(ext, i): text for job, ext, i, text in rows if job == 2}
    assert len(large) == 60
    assert len(small) == 30
    assert small == {key: text for key, text in large.items() if key[1] < 3}
    assert len(set(small.values())) > 10  # sampled, not one text repeated
    cut, run = (
        json.loads(runner.invoke(app, ["report", *args, "--json"]).output)
        for args in (["1", "--samples", "3"], ["2"])
    )
    for key in ("n_candidates", "strategies", "parse_failure_rate", "calculator", "pass_at_k"):
        assert cut[key] == run[key], key


def test_solve_without_output_writes_only_answer_lines_to_stdout(registered: str) -> None:
    args = ["solve", str(SAMPLES), "--generator", "tiny", "-n", "2", "--max-new-tokens", "8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]  # one object a line
    assert [r["id"] for r in rows][:2] == ["bakery", "stickers"]
    assert len(rows) == 10
    assert "Job 1: 10 problems" in result.stderr
    assert "coverage (test@N)" in result.stderr
    again = runner.invoke(app, args)
    assert again.stdout == result.stdout
    assert "Resuming job 1" in again.stderr


def test_answer_lines_to_a_reader_that_stops_early_end_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from verisolve.cli.solve import _print_lines

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone, as `| head` is after its lines
    with os.fdopen(write_end, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        _print_lines(["{}"] * 10_000)  # more than the file buffers: writes fail before the flush
        pipe.write("more\n")
        pipe.flush()  # stdout now leads nowhere and takes what it is given
