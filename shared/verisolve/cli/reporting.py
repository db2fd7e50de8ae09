"""Showing an evaluation report: rich tables, one JSON object, or a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from verisolve.cli.line_errors import fail
from verisolve.evaluation import EvaluationReport

console = Console()


def percent(value: float | None) -> str:
    """A rate as a percentage, or a dash when it is unknown."""
    return "—" if value is None else f"{100 * value:.1f}%"


def summary_table(report: EvaluationReport) -> Table:
    """Accuracy per strategy and the other headline metrics."""
    table = Table(title=f"{report.n_graded} problems, {report.n_candidates} candidates")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    for strategy, accuracy in report.strategies.items():
        name = f"top-{report.k} vote" if strategy.value == "topk-vote" else strategy.value
        table.add_row(f"accuracy: {name}", percent(accuracy))
    table.add_row("test@1 (one sample)", percent(report.test_at_1))
    table.add_row("coverage (test@N)", percent(report.coverage))
    table.add_row("parse failures", percent(report.parse_failure_rate))
    if report.calculator is not None:
        table.add_row("calculator use", percent(report.calculator.use_rate))
        table.add_row("calculator failures", percent(report.calculator.failure_rate))
    if report.auroc is not None:
        table.add_row("verifier AUROC", f"{report.auroc:.3f}")
    if report.ece is not None:
        table.add_row("verifier ECE", f"{report.ece:.3f}")
    return table


def curve_table(report: EvaluationReport) -> Table:
    """pass@k and every strategy's accuracy against k."""
    ks = sorted(report.pass_at_k)
    table = Table(title=f"Accuracy by k ({report.draws} random subsets)")
    table.add_column("k")
    for k in ks:
        table.add_column(str(k), justify="right")
    table.add_row("pass@k", *(percent(report.pass_at_k[k]) for k in ks))
    for strategy, curve in report.curves.items():
        table.add_row(strategy.value, *(percent(curve.get(k)) for k in ks))
    return table


def show_report(
    report: EvaluationReport,
    *,
    as_json: bool = False,
    plot: Path | None = None,
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write the plot if asked, then print the report as tables or as one JSON object.

    `provenance` (which candidates were read, when not simply a job's) joins the JSON object.
    """
    if plot is not None:
        from verisolve.plots import plot_accuracy_curves

        try:
            plot_accuracy_curves(report, plot)
        except OSError as exc:
            fail(f"cannot write {plot}: {exc.strerror or exc}")
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({**report.to_json(), **(provenance or {})}))
        return
    if report.n_graded:
        console.print(summary_table(report))
        console.print(curve_table(report))
    else:
        console.print(f"{report.n_problems} problems, no gold answers: no accuracy to report.")
    if plot is not None:
        console.print(f"Plot written to {plot}")
