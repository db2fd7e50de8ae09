"""Tests for `verisolve grade`, on GSM8K and on the paper's released samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.grading import grade_file

runner = CliRunner()

# Accuracy of each method in the paper's samples, by the authors' is_correct flags.
PAPER_ACCURACY = {
    "6b_finetuning": 0.217,
    "6b_verification": 0.390,
    "175b_finetuning": 0.347,
    "175b_verification": 0.563,
}


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_gold_solutions_grade_perfectly(gsm8k_dir: Path, tmp_path: Path) -> None:
    rows = [
        {"completion": row["answer"], "answer": row["answer"]}
        for row in _read_jsonl(gsm8k_dir / "test.jsonl")
    ]
    path = _write_jsonl(tmp_path / "gold.jsonl", rows)
    result = runner.invoke(app, ["grade", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "n": 1319,
        "correct": 1319,
        "accuracy": 1.0,
        "parse_failures": 0,
    }


@pytest.mark.parametrize("method", PAPER_ACCURACY)
def test_paper_samples_match_the_authors_flags(
    gsm8k_dir: Path, tmp_path: Path, method: str
) -> None:
    samples = _read_jsonl(gsm8k_dir / "example_model_solutions.jsonl")
    rows, flags = [], []
    for sample in samples:
        solution = sample[method]
        assert isinstance(solution, dict)
        rows.append({"completion": solution["solution"], "answer": sample["ground_truth"]})
        flags.append(solution["is_correct"])
    path = _write_jsonl(tmp_path / f"{method}.jsonl", rows)

    result = runner.invoke(app, ["grade", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n"] == len(samples)
    assert summary["accuracy"] == pytest.approx(PAPER_ACCURACY[method], abs=0.01)

    verdicts = [line.correct for line in grade_file(path).lines]
    agreement = sum(v == f for v, f in zip(verdicts, flags, strict=True)) / len(flags)
    print(f"{method}: accuracy {summary['accuracy']:.2%}, agreement with flags {agreement:.2%}")
    assert agreement >= 0.99


def test_table_output(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"completion": "#### 5", "answer": "5"},
            {"completion": "no idea", "answer": "5"},
            {"completion": "The answer is 4", "answer": "5"},
            {"completion": "A: 5", "answer": "#### 5"},
        ],
    )
    result = runner.invoke(app, ["grade", str(path)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells[1]
        for line in result.stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│┃ ").split("│")]) == 2
    }
    assert rows["completions"] == "4"
    assert rows["correct"] == "2"
    assert rows["accuracy"] == "50.0%"
    assert rows["parse failures"] == "1 (25.0%)"


def test_bad_lines_exit_1_with_nothing_on_stdout(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"completion": "#### 5", "answer": "5"}\n{"completion": "5"}\n[]\n')
    result = runner.invoke(app, ["grade", str(path), "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "line 2: answer: missing",
        "line 3: must be a JSON object, not an array",
        f"{path}: 2 bad line(s); nothing was graded.",
    ]


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read"), ("\n", "no completions")])
def test_unusable_files_exit_1(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "c.jsonl"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["grade", str(path), "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert message in result.stderr
