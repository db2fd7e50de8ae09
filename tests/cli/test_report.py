"""`verisolve report` and `verisolve rescore` on a job built in the test database."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.db import get_engine, session_scope
from verisolve.db.migrate import prepare_schema
from verisolve.executors.inline import InlineExecutor
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest
from verisolve.problems import ProblemIn
from verisolve.tables import Candidate, Job, Selection

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))
from doubles import ScriptedGenerator, ScriptedScorer

from jobtools import make_job, spec

runner = CliRunner()
PROBLEMS = [
    ProblemIn("a", "What is 2+2?", "4", "4", 1),
    ProblemIn("b", "What is 3*3?", "9", "9", 2),
    ProblemIn("c", "What is 10-7?", "3", "3", 3),
    ProblemIn("d", "What is 8/2?", "4", "4", 4),
]
# a: votes wrong, verifier right; b: all right; c: never right; d: votes right, verifier wrong.
ANSWERS = {
    "What is 2+2?": ["5", "5", "4", "5"],
    "What is 3*3?": ["9", "9", "8", "9"],
    "What is 10-7?": ["2", "2", "1", "2"],
    "What is 8/2?": ["4", "4", "7", "4"],
}
SCORES = {"4": 0.9, "5": 0.1, "9": 0.8, "8": 0.3, "2": 0.5, "1": 0.4, "7": 0.95}


@pytest.fixture
def job_id() -> int:
    """A finished job: four problems, four candidates each, scored by a scripted verifier."""
    engine = get_engine()
    prepare_schema(engine)
    with session_scope(engine) as session:
        job = make_job(session, spec("g", "v", n_samples=4, seed=3), PROBLEMS)
    executor = InlineExecutor(
        engine, lambda _: ScriptedGenerator(ANSWERS), lambda _: ScriptedScorer(SCORES)
    )
    executor.run(job.id)
    return job.id


def test_report_gives_the_numbers_of_the_job(job_id: int, tmp_path: Path) -> None:
    plot = tmp_path / "curves.png"
    result = runner.invoke(app, ["report", str(job_id), "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n_problems"] == 4
    assert report["n_candidates"] == 16
    strategies = report["strategies"]
    assert strategies["majority"] == 0.5  # a and c vote wrong
    assert strategies["topk-vote"] == 0.5  # k = 5 covers all four: the same votes
    assert strategies["verifier"] == 0.5  # right on a, wrong on d (its top score is a 7)
    assert strategies["weighted-vote"] == 0.75  # the 4 outweighs the 5s on a
    assert strategies["first"] == 0.5
    assert report["coverage"] == 0.75
    assert report["pass_at_k"]["1"] == pytest.approx((1 / 4 + 3 / 4 + 0 + 3 / 4) / 4)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_an_unknown_job_fails(job_id: int) -> None:
    result = runner.invoke(app, ["report", "999"])
    assert result.exit_code == 1
    assert "no job 999" in result.output


def test_rescore_with_a_real_verifier_replaces_every_score(job_id: int, tmp_path: Path) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.tiny import build_tiny_model
    from verisolve.modelstore.verifier_export import export_verifier

    hf = build_tiny_model(tmp_path / "hf", head="sequence-classification", seed=5)
    out = tmp_path / "tiny-verifier"
    export_verifier(hf, out, name="tiny-verifier")
    with session_scope() as session:
        registry.register(session, Manifest.load(out), out)
        before = dict(session.execute(sa.select(Candidate.id, Candidate.score)).all())
    result = runner.invoke(app, ["rescore", str(job_id), "--verifier", "tiny-verifier", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_candidates"] == 16
    with session_scope() as session:
        after = dict(session.execute(sa.select(Candidate.id, Candidate.score)).all())
        names = set(session.scalars(sa.select(Candidate.verifier)))
        job = session.get_one(Job, job_id)
        n_selections = session.scalar(sa.select(sa.func.count()).select_from(Selection))
    assert names == {"tiny-verifier"}
    assert job.verifier == "tiny-verifier"
    assert after.keys() == before.keys()
    assert after != before
    assert all(0.0 <= s <= 1.0 for s in after.values())
    assert n_selections == 4 * 5
    assert job.metrics is not None
    assert job.metrics["n_candidates"] == 16
