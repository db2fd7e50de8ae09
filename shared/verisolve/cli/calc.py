"""`verisolve calc EXPR`: evaluate an annotation expression with the safe calculator."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from verisolve.calculator import CalculatorError, calculate

# Lets a negative expression such as "-3+4" through instead of reading it as an option.
CONTEXT_SETTINGS: dict[str, Any] = {"ignore_unknown_options": True}

console = Console()
err_console = Console(stderr=True)


def calc(
    expr: Annotated[str, typer.Argument(help="Arithmetic expression, e.g. '1,200*3/4'.")],
) -> None:
    """Print the value of EXPR as a GSM8K annotation would write it."""
    try:
        result = calculate(expr)
    except CalculatorError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print(result, markup=False, highlight=False)
