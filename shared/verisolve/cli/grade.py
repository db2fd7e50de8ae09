"""`verisolve grade FILE.jsonl`: accuracy of completions written by anyone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verisolve.cli.line_errors import fail, print_line_errors
from verisolve.grading import GradeFileError, GradeReport, grade_file

console = Console()


def _table(report: GradeReport, title: str) -> Table:
    table = Table(title=title)
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    table.add_row("completions", f"{report.n:,}")
    table.add_row("correct", f"{report.correct:,}")
    table.add_row("accuracy", f"{100 * report.accuracy:.1f}%")
    failures = report.parse_failures
    table.add_row("parse failures", f"{failures:,} ({100 * failures / report.n:.1f}%)")
    return table


def grade(
    completions_file: Annotated[
        Path, typer.Argument(help='JSONL: {"completion", "answer" (the gold), "id"?}.')
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: n, correct, accuracy, ...")
    ] = False,
) -> None:
    """Grade each completion's final answer against its gold answer."""
    try:
        report = grade_file(completions_file)
    except GradeFileError as exc:
        print_line_errors(completions_file, exc, consequence="nothing was graded")
        raise typer.Exit(1) from None
    except OSError as exc:
        fail(f"cannot read {completions_file}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    if report.n == 0:
        fail(f"{completions_file}: holds no completions.")
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(report.summary()))
        return
    console.print(_table(report, str(completions_file)))
