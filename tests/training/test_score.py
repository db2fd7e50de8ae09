"""`verisolve score`: bad lines and unknown verifiers are refused before anything is written."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from verisolve.cli.app import app

runner = CliRunner()


def test_a_bad_line_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    data = tmp_path / "c.jsonl"
    data.write_text('{"question": "q", "completion": "#### 1"}\n{"question": "q"}\n')
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", str(data), "--verifier", "v", "-o", str(out)])
    assert result.exit_code == 1
    assert "line 2: completion: missing" in result.output
    assert not out.exists()


def test_an_unknown_verifier_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "c.jsonl"
    data.write_text('{"question": "q", "completion": "#### 1"}\n')
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", str(data), "--verifier", "nope", "-o", str(out)])
    assert result.exit_code == 1
    assert "no model 'nope'" in result.output
    assert not out.exists()
