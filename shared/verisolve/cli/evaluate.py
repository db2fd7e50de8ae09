"""`verisolve evaluate`: accuracy metrics for candidates from any system, read from JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verisolve.candidate_files import CandidateFileError, load_candidates
from verisolve.cli.line_errors import fail, print_line_errors
from verisolve.evaluation import DEFAULT_DRAWS, EvaluationReport
from verisolve.evaluation import evaluate as run_evaluation
from verisolve.selection import DEFAULT_TOP_K

console = Console()


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _summary_table(report: EvaluationReport) -> Table:
    table = Table(title=f"{report.n_graded} problems, {report.n_candidates} candidates")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    for strategy, accuracy in report.strategies.items():
        name = f"top-{report.k} vote" if strategy.value == "topk-vote" else strategy.value
        table.add_row(f"accuracy: {name}", _percent(accuracy))
    table.add_row("test@1 (one sample)", _percent(report.test_at_1))
    table.add_row("coverage (test@N)", _percent(report.coverage))
    table.add_row("parse failures", _percent(report.parse_failure_rate))
    if report.calculator is not None:
        table.add_row("calculator use", _percent(report.calculator.use_rate))
        table.add_row("calculator failures", _percent(report.calculator.failure_rate))
    if report.auroc is not None:
        table.add_row("verifier AUROC", f"{report.auroc:.3f}")
    if report.ece is not None:
        table.add_row("verifier ECE", f"{report.ece:.3f}")
    return table


def _curve_table(report: EvaluationReport) -> Table:
    ks = sorted(report.pass_at_k)
    table = Table(title=f"Accuracy by k ({report.draws} random subsets)")
    table.add_column("k")
    for k in ks:
        table.add_column(str(k), justify="right")
    table.add_row("pass@k", *(_percent(report.pass_at_k[k]) for k in ks))
    for strategy, curve in report.curves.items():
        table.add_row(strategy.value, *(_percent(curve.get(k)) for k in ks))
    return table


def evaluate(
    candidates_file: Annotated[
        Path, typer.Argument(help="JSONL: problem, gold, completion or answer, optional score.")
    ],
    k: Annotated[
        int, typer.Option("--k", min=1, help="How many top-scored candidates vote in topk-vote.")
    ] = DEFAULT_TOP_K,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of accuracy against k.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random subsets of the curves.")] = 0,
    draws: Annotated[
        int, typer.Option(min=1, help="Random subsets per problem and k for the curves.")
    ] = DEFAULT_DRAWS,
) -> None:
    """Score selection strategies, test@1, coverage and pass@k on a file of candidates."""
    try:
        problems = load_candidates(candidates_file)
    except CandidateFileError as exc:
        print_line_errors(candidates_file, exc, consequence="nothing was evaluated")
        raise typer.Exit(1) from None
    except OSError as exc:
        fail(f"cannot read {candidates_file}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    if not problems:
        fail(f"{candidates_file}: holds no candidates.")
        raise typer.Exit(1)
    report = run_evaluation(problems, k=k, seed=seed, draws=draws)
    if plot is not None:
        from verisolve.plots import plot_accuracy_curves

        try:
            plot_accuracy_curves(report, plot)
        except OSError as exc:
            fail(f"cannot write {plot}: {exc.strerror or exc}")
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report.to_json()))
        return
    console.print(_summary_table(report))
    console.print(_curve_table(report))
    if plot is not None:
        console.print(f"Plot written to {plot}")
