"""Training from jobs, and the clear errors that come before any training starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from training_data import write_candidates
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.db import get_engine, session_scope
from verisolve.db.migrate import prepare_schema
from verisolve.modelstore.manifest import Manifest
from verisolve.settings import get_settings
from verisolve.tables import Candidate, Job, JobStatus, Problem, ProblemStatus

runner = CliRunner()


def make_job(
    status: str,
    rows: list[dict[str, object]],
    *,
    gold: bool = True,
    generator: str = "gen",
    name: str = "",
) -> int:
    """A job in the configured database with the candidates of a candidate file's rows."""
    engine = get_engine(get_settings().database_url)
    prepare_schema(engine)
    with session_scope(engine) as session:
        job = Job(
            generator=generator,
            n_samples=4,
            temperature=0.7,
            max_new_tokens=64,
            strategy="majority",
            status=status,
            name=name,
        )
        session.add(job)
        session.flush()
        problems: dict[str, Problem] = {}
        seen: dict[str, int] = {}
        for row in rows:
            question = str(row["question"])
            if question not in problems:
                answer = str(row["completion"]).rsplit("#### ", 1)[1]
                right = answer if row["correct"] else "0"
                problems[question] = Problem(
                    job_id=job.id,
                    external_id=str(len(problems)),
                    question=question,
                    gold=right if gold else None,
                    status=ProblemStatus.DONE,
                )
                session.add(problems[question])
                session.flush()
            problem = problems[question]
            index = seen[question] = seen.get(question, -1) + 1
            text = str(row["completion"])
            session.add(
                Candidate(
                    problem_id=problem.id,
                    sample_index=index,
                    text=text,
                    answer=text.rsplit("#### ", 1)[1],
                    n_tokens=10,
                    finish_reason="answer",
                )
            )
        return job.id


def rows_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def train(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", "verifier", "--name", "v", *args])
    return result.exit_code, result.output


def nothing_registered() -> bool:
    return not (get_settings().models_path / "v").exists()


def test_a_finished_job_trains_a_verifier_that_rescores_it(
    tiny_base: Path, candidates_file: Path
) -> None:
    # No --base: the verifier starts from the job's generator, as in the paper; the job is
    # named as `solve --name` names it, and found by that name.
    rows = rows_of(candidates_file)
    job_id = make_job(JobStatus.DONE, rows, generator=str(tiny_base), name="gsm-train")
    code, output = train(
        "--jobs",
        "gsm-train",
        "--batch-tokens",
        "2048",
        "--accumulation",
        "1",
        "--learning-rate",
        "3e-3",
        "--score-form",
        "sequence",
    )
    assert code == 0, output
    result = runner.invoke(app, ["rescore", str(job_id), "--verifier", "v", "--json"])
    assert result.exit_code == 0, result.output
    with session_scope(get_engine(get_settings().database_url)) as session:
        scored = session.query(Candidate).filter(Candidate.score.is_not(None)).count()
    assert scored == 160
    manifest = Manifest.load(get_settings().models_path / "v")
    assert (manifest.training or {})["base"]["path"] == str(tiny_base.resolve())
    assert (manifest.training or {})["data"]["jobs"] == [job_id]


@pytest.mark.parametrize(
    ("status", "gold", "message"),
    [
        (JobStatus.RUNNING, True, "is still running"),
        (JobStatus.DONE, False, "have no gold answer"),
    ],
)
def test_unusable_jobs_are_refused(
    tiny_base: Path, candidates_file: Path, status: str, gold: bool, message: str
) -> None:
    job_id = make_job(status, rows_of(candidates_file), gold=gold)
    code, output = train("--jobs", str(job_id), "--base", str(tiny_base))
    assert code == 1
    assert message in output
    assert nothing_registered()


def test_one_label_only_is_refused(tiny_base: Path, tmp_path: Path) -> None:
    rows = rows_of(write_candidates(tmp_path / "c.jsonl", 5))
    path = tmp_path / "right.jsonl"
    path.write_text("".join(json.dumps({**r, "correct": True}) + "\n" for r in rows))
    code, output = train("--candidates", str(path), "--base", str(tiny_base))
    assert code == 1
    assert "a verifier needs both labels" in output
    assert nothing_registered()


def test_bad_files_and_bases_are_refused(
    tiny_base: Path, tmp_path: Path, candidates_file: Path
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    code, output = train("--candidates", str(empty), "--base", str(tiny_base))
    assert (code, "holds no candidates" in output) == (1, True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "completion": "#### 3", "gold": 3}\n{"question": "q"}\n')
    code, output = train("--candidates", str(bad), "--base", str(tiny_base))
    assert (code, "line 2: completion: missing" in output) == (1, True)
    code, output = train("--candidates", str(candidates_file), "--base", "no-such-model")
    assert (code, "unknown base model 'no-such-model'" in output) == (1, True)
    code, output = train("--jobs", "99", "--base", str(tiny_base))
    assert (code, "no job 99" in output) == (1, True)
    code, output = train("--jobs", "gsm-train", "--base", str(tiny_base))
    assert (code, "no job named 'gsm-train'" in output) == (1, True)
    first, second = (make_job(JobStatus.DONE, rows_of(candidates_file), name="twice") for _ in "ab")
    code, output = train("--jobs", "twice", "--base", str(tiny_base))
    assert code == 1
    assert f"2 jobs are named 'twice' (ids {first}, {second}): give the id" in output
    assert nothing_registered()
