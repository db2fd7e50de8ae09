"""Tests for `verisolve calc`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("16-3-4", "9"),
        ("1,200*3/4", "900"),
        ("10/3", "3.33"),
        ("-3+4", "1"),
        ("-7/2", "-3.5"),
        ("2**10", "1024"),
    ],
)
def test_calc_prints_the_result(expr: str, expected: str) -> None:
    result = runner.invoke(app, ["calc", expr])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{expected}\n"


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("1/0", "division by zero"),
        ("9**9**9", "exponent 387420489 is larger than 100"),
        ("__import__('os')", "unsupported character '_' at position 0"),
        ("5%", "unsupported character '%'"),
        ("[1]", "unsupported character '[' at position 0"),
    ],
)
def test_calc_refusal_exits_1_with_the_reason(expr: str, reason: str) -> None:
    result = runner.invoke(app, ["calc", expr])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert reason in result.stderr


def test_calc_needs_an_expression() -> None:
    result = runner.invoke(app, ["calc"])
    assert result.exit_code == 2
