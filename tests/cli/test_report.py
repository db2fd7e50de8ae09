"""`verisolve report` and `verisolve rescore` on a job built in the test database.

`report --samples/--vote-k/--with` (a job's first N candidates, jobs pooled) are checked on
scripted doubles whose answers depend on the seed; the claim they rest on (the first N candidates
of a job run with more are those `solve -n N` makes) on a real model in test_solve.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.db import get_engine, session_scope
from verisolve.db.migrate import prepare_schema
from verisolve.executors.inline import InlineExecutor
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest
from verisolve.pipeline.stages import GeneratedCandidate, SamplingRequest
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


POOL_PROBLEMS = PROBLEMS[:3]
# Seed 0 writes the first four answers, seed 1 the last four.
SEEDED_ANSWERS = {
    "What is 2+2?": ["5", "5", "4", "5", "4", "4", "4", "5"],
    "What is 3*3?": ["9", "8", "8", "8", "9", "9", "8", "9"],
    "What is 10-7?": ["2", "2", "2", "2", "3", "3", "3", "2"],
}
SEEDED_SCORES = {"4": 0.9, "5": 0.1, "9": 0.2, "8": 0.8, "2": 0.5, "3": 0.4}


class SeededScripted:
    """`#### <answer>` for sample i of seed s: the question's list at 4s + i."""

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        options = SEEDED_ANSWERS[request.question]
        base = 4 * request.sampling.seed
        return [
            GeneratedCandidate(i, f"Work.\n#### {options[base + i]}", 5, "answer")
            for i in range(request.sampling.n)
        ]


def scripted_job(
    seed: int, n: int = 4, problems: Sequence[ProblemIn] = POOL_PROBLEMS, **sampling: Any
) -> int:
    engine = get_engine()
    prepare_schema(engine)
    with session_scope(engine) as session:
        job = make_job(
            session, spec("g", "v", n_samples=n, seed=seed, vote_k=3, **sampling), problems
        )
    executor = InlineExecutor(
        engine, lambda _: SeededScripted(), lambda _: ScriptedScorer(SEEDED_SCORES)
    )
    executor.run(job.id)
    return job.id


def report_json(*args: str) -> tuple[int, dict[str, Any] | str]:
    result = runner.invoke(app, ["report", *args, "--json"])
    if result.exit_code != 0:
        return result.exit_code, result.output
    return 0, json.loads(result.output)


def test_pooled_jobs_count_as_one_job_of_their_samples_together() -> None:
    first, second = scripted_job(0), scripted_job(1)
    code, pooled = report_json(str(first), "--with", str(second))
    assert code == 0, pooled
    assert isinstance(pooled, dict)
    assert pooled["n_candidates"] == 24
    assert pooled["jobs"] == [first, second]
    assert pooled["problems"] == 3
    # a: 4 wins 4 to 4 on the verifier (0.9) and ties the vote, which goes to the best-ranked;
    # b: 8 outvotes 9 but the verifier ranks 8 first; c: 2 outvotes 3, and ranks first.
    assert pooled["strategies"]["verifier"] == pytest.approx(1 / 3)
    assert pooled["strategies"]["majority"] == pytest.approx(1 / 3)
    assert pooled["coverage"] == 1.0
    # The first job's own report: seed 0 never writes a 3, so coverage is two problems of three.
    _, alone = report_json(str(first))
    assert isinstance(alone, dict)
    assert alone["coverage"] == pytest.approx(2 / 3)
    # Its first four samples are the first job's, whichever job is named first after that.
    _, cut = report_json(str(first), "--with", str(second), "--samples", "4")
    _, other = report_json(str(second), "--with", str(first), "--samples", "4")
    _, second_alone = report_json(str(second))
    assert isinstance(cut, dict)
    assert isinstance(other, dict)
    assert isinstance(second_alone, dict)
    for key in ("strategies", "coverage", "test_at_1", "pass_at_k", "curves"):
        assert cut[key] == alone[key], key
        assert other[key] == second_alone[key], key


def test_vote_k_and_samples_change_what_is_counted() -> None:
    job = scripted_job(0)
    _, two_votes = report_json(str(job), "--vote-k", "2")
    _, three_votes = report_json(str(job))
    _, two_samples = report_json(str(job), "--samples", "2")
    assert isinstance(two_votes, dict)
    assert isinstance(three_votes, dict)
    assert isinstance(two_samples, dict)
    # a's best-scored is its one 4; among the top 2 a tie goes to it, among the top 3 two 5s win.
    assert two_votes["k"] == 2
    assert two_votes["strategies"]["topk-vote"] == pytest.approx(1 / 3)
    assert three_votes["strategies"]["topk-vote"] == 0.0
    assert two_samples["n_candidates"] == 6
    assert two_samples["samples"] == 2
    assert three_votes["coverage"] == pytest.approx(2 / 3)
    assert two_samples["coverage"] == pytest.approx(1 / 3)  # a's 4 is its third sample


def test_vote_k_without_a_verifier_says_there_is_no_vote() -> None:
    engine = get_engine()
    prepare_schema(engine)
    with session_scope(engine) as session:
        job = make_job(session, spec("g", None, n_samples=4, seed=0), POOL_PROBLEMS)
    InlineExecutor(engine, lambda _: SeededScripted(), lambda _: ScriptedScorer({})).run(job.id)
    result = runner.invoke(app, ["report", str(job.id), "--vote-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert "topk-vote" not in json.loads(result.stdout)["strategies"]
    assert f"--vote-k 3: job {job.id} has no verifier" in result.stderr
    # With a verifier's scores, the vote is there and nothing is said.
    scored = runner.invoke(app, ["report", str(scripted_job(0)), "--vote-k", "3", "--json"])
    assert "topk-vote" in json.loads(scored.stdout)["strategies"]
    assert scored.stderr == ""


def test_pooling_keeps_only_the_problems_every_job_holds() -> None:
    first = scripted_job(0)
    second = scripted_job(1, problems=POOL_PROBLEMS[:2])
    code, pooled = report_json(str(first), "--with", str(second))
    assert code == 0, pooled
    assert isinstance(pooled, dict)
    assert pooled["problems"] == 2
    assert pooled["n_candidates"] == 16
    text = runner.invoke(app, ["report", str(first), "--with", str(second)]).output
    assert "pooled with job" in text
    assert "the 2 problems all of them hold" in text


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"seed": 0}, "both have seed 0: their candidates are the same ones"),
        ({"seed": 1, "temperature": 1.0}, "temperature is 1.0, job"),
        ({"seed": 1, "max_new_tokens": 64}, "max_new_tokens is 64"),
    ],
)
def test_jobs_that_differ_in_more_than_their_seed_are_refused(
    second: dict[str, Any], message: str
) -> None:
    first = scripted_job(0)
    other = scripted_job(n=4, **second)
    code, output = report_json(str(first), "--with", str(other))
    assert code == 1
    assert message in str(output)


def test_bad_requests_are_refused_in_one_line() -> None:
    job = scripted_job(0)
    code, output = report_json(str(job), "--samples", "5")
    assert code == 1
    assert f"--samples 5: there are 4 per problem (job {job}: 4)" in str(output)
    code, output = report_json(str(job), "--with", "999")
    assert code == 1
    assert "no job 999" in str(output)
    code, output = report_json(str(job), "--with", str(job))
    assert code == 1
    assert "pooled with itself" in str(output)
    result = runner.invoke(
        app, ["report", str(job), "--samples", "2", "--api", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 1
    assert "not with --api" in result.output
