"""Tests for `verisolve check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app

runner = CliRunner()


def _write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_bytes(content)
    return path


def test_counts_problems_and_gold_answers(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        b'{"question": "A?", "answer": "#### 4"}\n\n{"question": "B?", "id": "b"}\n'
        b'{"question": "C?", "answer": 12}\n',
    )
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: 3 problems, 2 with a gold answer.\n"


@pytest.mark.parametrize(("name", "count"), [("train.jsonl", 7473), ("test.jsonl", 1319)])
def test_gsm8k_files(gsm8k_dir: Path, name: str, count: int) -> None:
    result = runner.invoke(app, ["check", str(gsm8k_dir / name)])
    assert result.exit_code == 0, result.output
    assert f": {count:,} problems, {count:,} with a gold answer." in result.stdout


def test_lists_every_bad_line_and_exits_1(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        b'{"question": "A?"}\n{"answer": "4"}\n{"question": "B?", "id": "1"}\n\xff\n'
        b'{"question": "C?", "answer": "many"}\n',
    )
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[:4] == [
        "line 2: question: missing",
        "line 3: id: '1' is already the id of line 1 "
        "(lines without an id take their line number as id)",
        "line 4: not valid UTF-8 (byte 0xff at column 1)",
        "line 5: answer: not a number, nor a solution whose last line is '#### N' (or 'A: N')",
    ]
    assert lines[4] == f"{path}: 4 bad line(s); nothing would be imported."


def test_question_limit_option(tmp_path: Path) -> None:
    path = _write(tmp_path, b'{"question": "Twelve chars"}\n')
    assert runner.invoke(app, ["check", str(path)]).exit_code == 0
    result = runner.invoke(app, ["check", str(path), "--max-question-chars", "5"])
    assert result.exit_code == 1
    assert "line 1: question: 12 characters, over the limit of 5" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), (b"", "holds no problems"), (b"\n  \n", "holds no problems")],
)
def test_unusable_files_exit_1(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "problems.jsonl"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    assert message in result.stderr
