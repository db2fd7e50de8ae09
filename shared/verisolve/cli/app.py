"""The `verisolve` command: one typer app; each command group lives in its own module."""

from __future__ import annotations

import typer

from verisolve.cli import calc, db

app = typer.Typer(
    name="verisolve",
    help="Solve math word problems in bulk with generators and verifiers (Cobbe et al. 2021).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.command("calc", context_settings=calc.CONTEXT_SETTINGS)(calc.calc)


def main() -> None:
    """Entry point of the console script."""
    app()
