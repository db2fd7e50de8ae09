"""`verisolve evaluate`: accuracy metrics for candidates from any system, read from JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from verisolve.candidate_files import CandidateFileError, load_candidates
from verisolve.cli.line_errors import fail, print_line_errors
from verisolve.cli.reporting import show_report
from verisolve.evaluation import DEFAULT_DRAWS
from verisolve.evaluation import evaluate as run_evaluation
from verisolve.selection import DEFAULT_TOP_K


def evaluate(
    candidates_file: Annotated[
        Path, typer.Argument(help="JSONL: problem, gold, completion or answer, optional score.")
    ],
    k: Annotated[
        int,
        typer.Option(
            "--vote-k", "--k", min=1, help="How many top-scored candidates vote in topk-vote."
        ),
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
    show_report(report, as_json=as_json, plot=plot)
