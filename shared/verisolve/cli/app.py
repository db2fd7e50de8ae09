"""The `verisolve` command: one typer app; each command group lives in its own module."""

from __future__ import annotations

import sys

import typer

from verisolve.cli import (
    api,
    calc,
    check,
    data,
    db,
    evaluate,
    grade,
    inspect,
    jobs,
    keys,
    models,
    report,
    repro,
    results,
    score,
    solve,
    train,
)
from verisolve.cli.bench import app as bench_app
from verisolve.cli.job_options import with_job_options
from verisolve.cli.line_errors import fail
from verisolve.cli.metrics_exporter import exporter
from verisolve.settings import SettingsError

app = typer.Typer(
    name="verisolve",
    help="Solve math word problems in bulk with generators and verifiers (Cobbe et al. 2021).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Solving a file in this process, and reading what came out.
app.command("solve")(with_job_options(solve.solve))
app.command("report")(report.report)
app.command("results")(results.results)
app.command("rescore")(report.rescore)
app.command("inspect")(inspect.inspect)
# Files from anywhere: problems, completions, candidates, one calculator call.
app.command("check")(check.check)
app.command("grade")(grade.grade)
app.command("evaluate")(evaluate.evaluate)
app.command("calc", context_settings=calc.CONTEXT_SETTINGS)(calc.calc)
app.add_typer(data.app, name="data")
app.add_typer(repro.app, name="repro")
# The distributed deployment: jobs, workers, relay, API, metrics.
jobs.register(app)
app.command("api")(api.api)
app.command("exporter")(exporter)
app.add_typer(keys.app, name="keys")
app.add_typer(db.app, name="db")
app.add_typer(models.app, name="models")
app.add_typer(bench_app, name="bench")
# Training: fine-tune generators, train verifiers, score any candidate file.
app.add_typer(train.app, name="train")
app.command("score")(score.score)


def main() -> None:
    """Entry point of the console script."""
    try:
        app()
    except SettingsError as exc:  # a bad VERISOLVE_* variable: one line, not a traceback
        fail(f"error: {exc}")
        sys.exit(1)
