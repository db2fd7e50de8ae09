"""`verisolve bench steps`: one decode step of optimum's graph, the prefix-shared graph and the
cascade graph (continuous batching), when the model has it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verisolve.benchmarks.op_profile import BETWEEN
from verisolve.benchmarks.prefix import (
    AGAINST,
    CASCADE,
    GRAPHS,
    PREFIX,
    STANDARD,
    StepTiming,
    prompt_lengths_for_shots,
    step_seconds,
    time_decode_steps,
    timings_by_point,
)
from verisolve.cli.line_errors import fail
from verisolve.modelstore.registry import ModelNotFoundError

console = Console()
# Op types shown one by one in --profile's tables; the rest are summed as "other ops".
TOP_OPS = 12


def steps(
    model: Annotated[
        str | None,
        typer.Option(
            help="Model name or directory with optimum's and the prefix-shared decoder graphs "
            "(its cascade graph is timed too when it has one; default: the default generator)."
        ),
    ] = None,
    shots: Annotated[
        list[int] | None,
        typer.Option(min=0, help="Few-shot exemplars in the prompt (repeatable; default 0 and 4)."),
    ] = None,
    generated: Annotated[
        list[int] | None,
        typer.Option(min=0, help="Tokens generated so far (repeatable; default 1 and 120)."),
    ] = None,
    rows: Annotated[int, typer.Option(min=1, help="Rows decoded together (N).")] = 64,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per point (median).")] = 5,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads.")] = None,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile",
            help="Also show where a step's time goes, by ONNX op type (ONNX Runtime's "
            "profiler, whose overhead is in the times then).",
        ),
    ] = False,
    against: Annotated[
        str | None,
        typer.Option(
            help="Another export of the model (a name or directory): its cascade graph is timed "
            "alternately with --model's on the same inputs, and the table gives the ratio."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Seconds per decode step against the past length, for each graph side by side."""
    from verisolve.cli.bench import resolve_model

    shot_list = shots or [0, 4]
    try:
        model_dir = resolve_model(model)
        against_dir = None if against is None else resolve_model(against)
        lengths = prompt_lengths_for_shots(model_dir, shot_list)
        timings = time_decode_steps(
            model_dir,
            rows=rows,
            prompt_lengths=sorted(set(lengths.values())),
            generated_lengths=generated or [1, 120],
            repeats=repeats,
            threads=threads,
            profile=profile,
            against=against_dir,
        )
    except (ValueError, OSError, ModelNotFoundError) as exc:
        fail(f"bench steps: {exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"shots": lengths, "timings": [asdict(t) for t in timings]}))
        return
    console.print(_table(lengths, timings, rows))
    if profile:
        for (prompt, own), point in timings_by_point(timings).items():
            console.print(_ops_table(point, prompt, own, rows))


def _table(lengths: dict[int, int], timings: list[StepTiming], rows: int) -> Table:
    """One line per (prompt, generated) point: each graph and the prefix graph's speedup."""
    shots_of = {tokens: k for k, tokens in sorted(lengths.items(), reverse=True)}
    table = Table(title=f"One decode step at N={rows}")
    points = step_seconds(timings)
    cascade = any(CASCADE in seconds for seconds in points.values())
    against = any(AGAINST in seconds for seconds in points.values())
    columns = ["shots", "prompt", "generated", "standard ms", "prefix ms", "speedup"]
    columns += ["cascade ms"] if cascade else []
    columns += ["against ms", "cascade / against"] if against else []
    for column in columns:
        table.add_column(column, justify="right")
    for (prompt, own), seconds in points.items():
        cells = [
            str(shots_of[prompt]),
            str(prompt),
            str(own),
            f"{seconds[STANDARD] * 1000:.1f}",
            f"{seconds[PREFIX] * 1000:.1f}",
            f"{seconds[STANDARD] / seconds[PREFIX]:.1f}x",
        ]
        if cascade:
            cells.append(f"{seconds[CASCADE] * 1000:.1f}")
        if against:
            ratio = seconds[CASCADE] / seconds[AGAINST]
            cells += [f"{seconds[AGAINST] * 1000:.1f}", f"{ratio:.2f}x"]
        table.add_row(*cells)
    return table


def _ops_table(point: list[StepTiming], prompt: int, own: int, rows: int) -> Table:
    """Milliseconds per step by op type, one column per graph, the costliest ops first."""
    graphs = sorted(point, key=lambda t: GRAPHS.index(t.graph))
    ops = {t.graph: t.ops or {} for t in graphs}
    # Ordered by the last graph's costs (the cascade graph's, when the model has it), then the
    # ops only the others have.
    leading: list[str] = []
    for t in reversed(graphs):
        leading += [op for op in ops[t.graph] if op != BETWEEN and op not in leading]
    shown = leading[:TOP_OPS]
    table = Table(title=f"Where a step goes at N={rows}, {prompt} prompt, {own} generated (ms)")
    table.add_column("op type")
    for t in graphs:
        table.add_column(t.graph, justify="right")

    def cells(values: list[float]) -> list[str]:
        return [f"{v * 1000:.2f}" for v in values]

    for op in shown:
        table.add_row(op, *cells([ops[t.graph].get(op, 0.0) for t in graphs]))
    other = [
        sum(v for k, v in ops[t.graph].items() if k not in shown and k != BETWEEN) for t in graphs
    ]
    table.add_row("other ops", *cells(other))
    table.add_row(BETWEEN, *cells([ops[t.graph].get(BETWEEN, 0.0) for t in graphs]))
    table.add_row("profiled run", *cells([sum(ops[t.graph].values()) for t in graphs]))
    return table
