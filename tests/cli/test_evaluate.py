"""Tests for `verisolve evaluate`: numbers on hand-built and GSM8K files, the plot, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Four problems of four candidates, interleaved; answers in several spellings. The same numbers
# as HAND in tests/test_evaluation.py, where each is worked out.
HAND_LINES: list[dict[str, Any]] = [
    {"problem": "p1", "gold": "3", "answer": "4", "score": 0.2},
    {"problem": "p2", "gold": "The total is 5.\n#### 5", "answer": "$5", "score": 0.1},
    {"problem": "p1", "gold": "3", "completion": "She has 3 apples left.\n#### 3", "score": 0.9},
    {"problem": "p1", "gold": "3", "answer": "3.0", "score": 0.6},
    {"problem": "p1", "gold": "3", "completion": "I am not sure.", "score": 0.4},
    {"problem": "p2", "gold": "5", "answer": "6", "score": 0.8},
    {"problem": "p2", "gold": "5", "answer": 6, "score": 0.7},
    {"problem": "p2", "gold": "5", "answer": "5", "score": 0.3},
    {"problem": "p3", "gold": 1, "answer": "1", "score": 0.5},
    {"problem": "p3", "gold": "1", "answer": "2", "score": 0.5},
    {"problem": "p3", "gold": "1", "answer": None, "score": 0.9},
    {"problem": "p3", "gold": "1", "answer": "1", "score": 0.2},
    {"problem": "p4", "gold": "9", "answer": "8", "score": 0.9},
    {"problem": "p4", "gold": "9", "completion": "No idea.", "score": 0.1},
    {"problem": "p4", "gold": "9", "answer": "8", "score": 0.3},
    {"problem": "p4", "gold": "9", "answer": "10", "score": 0.6},
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize(
    ("option", "k", "topk_vote"),
    [("--vote-k", "2", 0.5), ("--vote-k", "5", 0.5), ("--vote-k", "1", 0.25), ("--k", "1", 0.25)],
)
def test_hand_file_numbers(tmp_path: Path, option: str, k: str, topk_vote: float) -> None:
    # --vote-k as solve and report name it; --k, its earlier name, still works.
    data = run_json(str(write_jsonl(tmp_path / "c.jsonl", HAND_LINES)), option, k)
    assert (data["n_problems"], data["n_candidates"]) == (4, 16)
    assert data["strategies"] == pytest.approx(
        {
            "verifier": 0.25,
            "topk-vote": topk_vote,
            "weighted-vote": 0.5,
            "majority": 0.75,
            "first": 0.5,
        }
    )
    assert data["coverage"] == pytest.approx(0.75)
    assert data["pass_at_k"] == pytest.approx({"1": 0.375, "2": 0.625, "4": 0.75})
    assert data["parse_failure_rate"] == pytest.approx(3 / 16)
    assert data["test_at_1"] == pytest.approx(0.375)
    assert data["auroc"] == pytest.approx(23.5 / 60)
    assert data["ece"] == pytest.approx(0.35)


def test_without_scores_leaves_scored_strategies_out(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "score"} for r in HAND_LINES]
    data = run_json(str(write_jsonl(tmp_path / "c.jsonl", rows)))
    assert data["strategies"] == pytest.approx({"majority": 0.75, "first": 0.5})
    assert (data["auroc"], data["ece"]) == (None, None)


def test_plot_and_table(tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    path = write_jsonl(tmp_path / "c.jsonl", HAND_LINES)
    result = runner.invoke(app, ["evaluate", str(path), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "majority" in result.stdout
    assert "75.0%" in result.stdout
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_gsm8k_paper_samples(gsm8k_dir: Path, tmp_path: Path) -> None:
    source = gsm8k_dir / "example_model_solutions.jsonl"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    # The paper's four methods as four candidates, with a made-up score per method, so the
    # verifier always picks 175b_verification and "first" is 6b_finetuning.
    methods = {
        "6b_finetuning": 0.2,
        "6b_verification": 0.6,
        "175b_finetuning": 0.4,
        "175b_verification": 0.8,
    }
    rows: list[dict[str, Any]] = []
    flags: list[list[bool]] = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines()):
        item = json.loads(line)
        flags.append([item[m]["is_correct"] for m in methods])
        rows += [
            {
                "problem": str(number),
                "gold": item["ground_truth"],
                "completion": item[m]["solution"],
                "score": score,
            }
            for m, score in methods.items()
        ]
    png = tmp_path / "gsm8k.png"
    data = run_json(str(write_jsonl(tmp_path / "c.jsonl", rows)), "--plot", str(png))
    n = len(flags)
    assert (data["n_problems"], data["n_candidates"]) == (n, 4 * n)
    # Our grading must agree with the authors' flags (21.7% and 56.3% in the paper).
    assert data["strategies"]["first"] == pytest.approx(sum(f[0] for f in flags) / n)
    assert data["strategies"]["first"] == pytest.approx(0.217, abs=0.001)
    assert data["strategies"]["verifier"] == pytest.approx(sum(f[3] for f in flags) / n)
    assert data["strategies"]["verifier"] == pytest.approx(0.563, abs=0.001)
    assert data["test_at_1"] == pytest.approx(sum(sum(f) for f in flags) / (4 * n))
    assert data["coverage"] == pytest.approx(sum(any(f) for f in flags) / n)
    assert data["pass_at_k"]["4"] == data["coverage"]
    assert png.read_bytes()[:8] == PNG_MAGIC


OK = {"problem": "a", "gold": "1", "answer": "1"}


def lines(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lines(OK) + "not json\n", "line 2: not valid JSON"),
        ("[1, 2]\n", "line 1: must be a JSON object"),
        (lines({"gold": "1", "answer": "1"}), "line 1: problem: missing"),
        (lines({**OK, "problem": 1.5}), "line 1: problem: must be a string"),
        (lines({**OK, "gold": "many"}), "line 1: gold: not a number"),
        (lines({"problem": "a", "answer": "1"}), "line 1: gold: missing"),
        (lines(OK) + "\n" + lines({**OK, "gold": "2"}), "line 3: gold: 2 differs from 1 on line 1"),
        (lines({**OK, "completion": "1"}), 'line 1: needs exactly one of "completion"'),
        (lines({"problem": "a", "gold": "1"}), "line 1: needs exactly one"),
        (lines({**OK, "score": 1.5}), "line 1: score: must be a probability in [0, 1]"),
        (lines({**OK, "score": "high"}), "line 1: score: must be a number"),
        (lines({**OK, "score": 0.5}, OK), "line 2: score: missing, but line 1 has one"),
        (lines(OK, {**OK, "score": 0.5}), "line 2: score: present, but line 1 has none"),
        (lines({**OK, "answer": None, "completion": None}), "line 1: needs exactly one"),
        (
            '{"problem": "a", "gold": "1", "completion": 5}\n',
            "line 1: completion: must be a string",
        ),
        (lines({**OK, "calc_calls": 1, "calc_failures": 2}), "calc_failures: must not exceed"),
        (lines({**OK, "calc_calls": -1}), "line 1: calc_calls: must be a non-negative integer"),
        (lines({**OK, "answer": [1]}), "line 1: answer: must be a string, a number or null"),
        (lines({**OK, "sample": 3}), "line 1: sample: unknown field"),
    ],
)
def test_bad_file_exits_1_naming_line_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["evaluate", str(path), "--json"])
    assert result.exit_code == 1
    assert message in result.stderr
    assert "nothing was evaluated" in result.stderr
    assert result.stdout == ""


def test_every_bad_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(lines({**OK, "score": 2}, OK, {**OK, "gold": "x"}), encoding="utf-8")
    result = runner.invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 1
    assert "line 1: score" in result.stderr
    assert "line 3: gold" in result.stderr
    assert "2 bad line(s)" in result.stderr


@pytest.mark.parametrize(("name", "content"), [("empty.jsonl", "\n\n"), ("absent.jsonl", None)])
def test_empty_or_missing_file_exits_1(tmp_path: Path, name: str, content: str | None) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 1
    assert ("holds no candidates" if content is not None else "cannot read") in result.stderr
