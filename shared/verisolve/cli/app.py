"""The `verisolve` command: one typer app; each command group lives in its own module."""

from __future__ import annotations

import typer

from verisolve.cli import calc, check, db, evaluate, grade, models

app = typer.Typer(
    name="verisolve",
    help="Solve math word problems in bulk with generators and verifiers (Cobbe et al. 2021).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Files from anywhere: problems, completions, candidates, one calculator call.
app.command("check")(check.check)
app.command("grade")(grade.grade)
app.command("evaluate")(evaluate.evaluate)
app.command("calc", context_settings=calc.CONTEXT_SETTINGS)(calc.calc)
app.add_typer(db.app, name="db")
app.add_typer(models.app, name="models")


def main() -> None:
    """Entry point of the console script."""
    app()
