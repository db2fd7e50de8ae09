"""Printing the bad lines of a user's JSONL file, shared by the commands that read one."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from verisolve.jsonl import JsonlFileError

err_console = Console(stderr=True)


def fail(message: str) -> None:
    """Print one error to stderr (user text: no markup, no wrapping)."""
    err_console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)


def print_line_errors(path: Path, exc: JsonlFileError, *, consequence: str) -> None:
    """Every kept error with its line number, then how many there were in all."""
    for error in exc.errors:
        err_console.print(str(error), markup=False, highlight=False, soft_wrap=True)
    hidden = exc.n_errors - len(exc.errors)
    more = f" ({hidden:,} not shown)" if hidden else ""
    fail(f"{path}: {exc.n_errors:,} bad line(s){more}; {consequence}.")
