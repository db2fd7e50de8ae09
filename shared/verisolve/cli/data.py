"""`verisolve data`: make problem files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from verisolve.cli.line_errors import fail
from verisolve.jsonl import write_jsonl
from verisolve.synth import MAX_STEPS, Split, synthesize

app = typer.Typer(help="Make problem files.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def synth(
    n: Annotated[int, typer.Option("--n", min=1, help="How many problems.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The JSONL file to write.")],
    seed: Annotated[int, typer.Option(help="The same seed writes the same file.")] = 0,
    split: Annotated[
        str,
        typer.Option(help="train or test: a question belongs to one split only, by its hash."),
    ] = "train",
    min_steps: Annotated[int, typer.Option(min=2, max=MAX_STEPS, help="Fewest steps.")] = 2,
    max_steps: Annotated[int, typer.Option(min=2, max=MAX_STEPS, help="Most steps.")] = 4,
    distractors: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of problems with a sentence whose number is unused."
        ),
    ] = 0.3,
) -> None:
    """Write synthetic grade-school word problems in GSM8K's format (question, worked answer)."""
    if split not in ("train", "test"):
        fail(f"--split must be train or test, not {split!r}")
        raise typer.Exit(1)
    chosen: Split = "train" if split == "train" else "test"
    try:
        problems = list(
            synthesize(
                n,
                seed=seed,
                split=chosen,
                min_steps=min_steps,
                max_steps=max_steps,
                distractor_rate=distractors,
            )
        )
    except ValueError as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
    rows = (
        {"id": f"synth-{chosen}-{seed}-{i}", "question": p.question, "answer": p.answer}
        for i, p in enumerate(problems)
    )
    count = write_jsonl(output, rows)
    console.print(f"{count:,} {chosen} problems written to {output}")
