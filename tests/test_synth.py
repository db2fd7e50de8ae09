"""Tests for the synthetic problem generator and `verisolve data synth`."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.answers import parse_gold
from verisolve.calculator import evaluate
from verisolve.cli.app import app
from verisolve.problems import load_problems
from verisolve.synth import synthesize

runner = CliRunner()
ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>([^ .]*)")
NUMBER = re.compile(r"\d+")


def _synth(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    result = runner.invoke(app, ["data", "synth", "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return out


def test_every_step_is_calculator_exact_and_the_answer_follows() -> None:
    for problem in synthesize(500, seed=3, min_steps=2, max_steps=5):
        lines = problem.answer.splitlines()
        assert lines[-1] == f"#### {problem.result}"
        steps = [ANNOTATION.search(line) for line in lines[:-1]]
        assert len(steps) == problem.steps
        assert 2 <= problem.steps <= 5
        previous: str | None = None
        for match in steps:
            assert match is not None
            expr, result, written = match.groups()
            assert evaluate(expr) == Fraction(result) == Fraction(written)
            assert Fraction(result).denominator == 1
            # Each step but the first works on the result of the step before it.
            if previous is not None:
                assert expr.startswith(previous)
            previous = result
        assert previous == str(problem.result)
        assert parse_gold(problem.answer) == str(problem.result)


def test_file_passes_check_and_same_seed_gives_same_file(tmp_path: Path) -> None:
    one = _synth(tmp_path, "a.jsonl", "--n", "300", "--seed", "7")
    two = _synth(tmp_path, "b.jsonl", "--n", "300", "--seed", "7")
    other = _synth(tmp_path, "c.jsonl", "--n", "300", "--seed", "8")
    assert one.read_bytes() == two.read_bytes() != other.read_bytes()
    problems = load_problems(one)
    assert len(problems) == 300
    assert all(p.gold is not None for p in problems)
    assert len({p.question for p in problems}) == 300
    result = runner.invoke(app, ["check", str(one)])
    assert result.exit_code == 0
    assert "300 problems, 300 with a gold answer" in result.output


def test_train_and_test_files_never_share_a_question(tmp_path: Path) -> None:
    train = _synth(tmp_path, "train.jsonl", "--n", "2000", "--seed", "1")
    test = _synth(tmp_path, "test.jsonl", "--n", "500", "--seed", "2", "--split", "test")
    questions = [
        {json.loads(line)["question"] for line in path.read_text().splitlines()}
        for path in (train, test)
    ]
    assert len(questions[0]) == 2000
    assert len(questions[1]) == 500
    assert not questions[0] & questions[1]


def test_difficulty_parameters() -> None:
    easy = list(synthesize(200, seed=0, min_steps=2, max_steps=2, distractor_rate=0.0))
    hard = list(synthesize(200, seed=0, min_steps=5, max_steps=5, distractor_rate=1.0))
    assert {p.steps for p in easy} == {2}
    assert {p.steps for p in hard} == {5}
    # Without distractors every number of the question is used by the answer.
    for p in easy:
        assert set(NUMBER.findall(p.question)) <= set(NUMBER.findall(p.answer))
    unused = [set(NUMBER.findall(p.question)) - set(NUMBER.findall(p.answer)) for p in hard]
    assert sum(bool(u) for u in unused) > 150  # a distractor's number can coincide by chance


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-steps", "4", "--max-steps", "3"], "steps must satisfy"),
        (["--split", "dev"], "--split must be train or test"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "x.jsonl"
    result = runner.invoke(app, ["data", "synth", "--n", "5", "-o", str(out), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert not out.exists()
