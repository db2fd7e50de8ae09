"""`verisolve check FILE.jsonl`: validate a problem file without importing it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from verisolve.cli.line_errors import fail, print_line_errors
from verisolve.problems import ProblemFileError, load_problems

console = Console()


def check(
    problems_file: Annotated[
        Path, typer.Argument(help='JSONL, one problem a line: {"question", "answer"?, "id"?}.')
    ],
    max_question_chars: Annotated[
        int | None,
        typer.Option(min=1, help="Longest question accepted [default: from the settings]."),
    ] = None,
) -> None:
    """Count the problems of a file, or list every bad line (and exit 1)."""
    try:
        problems = load_problems(problems_file, max_question_chars=max_question_chars)
    except ProblemFileError as exc:
        print_line_errors(problems_file, exc, consequence="nothing would be imported")
        raise typer.Exit(1) from None
    except OSError as exc:
        fail(f"cannot read {problems_file}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    if not problems:
        fail(f"{problems_file}: holds no problems.")
        raise typer.Exit(1)
    with_gold = sum(problem.gold is not None for problem in problems)
    console.print(
        f"{problems_file}: {len(problems):,} problems, {with_gold:,} with a gold answer.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
