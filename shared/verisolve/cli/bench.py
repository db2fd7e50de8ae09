"""`verisolve bench`: throughput benchmarks; `bench generate` compares the sampling engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verisolve.benchmarks.generate import RUNNERS, BenchSetup, compare, first_question
from verisolve.cli import (
    bench_ingest,
    bench_inspector,
    bench_job,
    bench_pipeline,
    bench_steps,
    bench_train,
)
from verisolve.cli.database import require_schema
from verisolve.cli.line_errors import fail
from verisolve.db import get_engine, session_scope
from verisolve.modelstore import registry
from verisolve.settings import get_settings

app = typer.Typer(help="Throughput benchmarks.", no_args_is_help=True)
app.command("pipeline")(bench_pipeline.pipeline)
app.command("ingest")(bench_ingest.ingest)
app.command("steps")(bench_steps.steps)
app.command("inspector")(bench_inspector.inspector)
app.command("train")(bench_train.train)
app.command("job")(bench_job.job)
console = Console()
err_console = Console(stderr=True)


def resolve_model(name_or_dir: str | None) -> Path:
    """A model directory from a path, a name under the models directory, or the registry."""
    settings = get_settings()
    name = name_or_dir or settings.default_generator
    for candidate in (Path(name).expanduser(), settings.models_path / name):
        if (candidate / "manifest.json").is_file():
            return candidate.resolve()
    engine = get_engine(settings.database_url)
    require_schema(engine)
    with session_scope(engine) as session:
        return registry.resolve(session, name)


@app.command()
def generate(
    model: Annotated[
        str | None, typer.Option(help="Model name or directory (default: the default generator).")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Candidates per problem (N).")] = 64,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Token budget per candidate.")] = 256,
    shots: Annotated[
        int | None, typer.Option(min=0, help="Few-shot exemplars in the prompt (default: all).")
    ] = None,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature.")] = 0.7,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for every runner (default: all cores).")
    ] = None,
    questions: Annotated[
        Path | None,
        typer.Option(help="JSONL problem file; its first question is used (default: our own)."),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option(help=f"Run only these: {', '.join(RUNNERS)} (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Candidates/s and tokens/s of the engine, transformers' generate and optimum's generate."""
    runners = tuple(only or RUNNERS)
    unknown = [r for r in runners if r not in RUNNERS]
    if unknown:
        fail(f"--only: unknown runner {unknown[0]!r} (expected one of {', '.join(RUNNERS)})")
        raise typer.Exit(1)
    try:
        setup = BenchSetup(
            model_dir=resolve_model(model),
            samples=samples,
            max_new_tokens=max_new_tokens,
            shots=shots,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            threads=threads,
            **({"question": first_question(questions)} if questions else {}),
        )
        result = compare(setup, runners, progress=lambda m: err_console.print(m, style="dim"))
    except (registry.ModelNotFoundError, ValueError, RuntimeError, OSError) as exc:
        fail(f"bench generate: {exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result))
    else:
        console.print(_table(result, runners))


def _table(result: dict[str, object], runners: tuple[str, ...]) -> Table:
    """The runs side by side."""
    title = (
        f"{result['model']}: N={result['samples']}, {result['max_new_tokens']} new tokens, "
        f"{result['shots']} shots, prompt {result['prompt_tokens']} tokens"
    )
    table = Table(title=title)
    for column in ("runner", "seconds", "candidates/s", "tokens", "tokens/s", "engine speedup"):
        table.add_column(column, justify="left" if column == "runner" else "right")
    for name in runners:
        if result.get(f"{name}_seconds") is None:
            continue  # not run (the standard-graph engine of a model without the other graph)
        speedup = result.get(f"speedup_vs_{name}")
        table.add_row(
            name,
            f"{result[f'{name}_seconds']:.1f}",
            f"{result[f'{name}_candidates_per_s']:.2f}",
            f"{result[f'{name}_tokens']}",
            f"{result[f'{name}_tokens_per_s']:.1f}",
            f"{speedup:.2f}x" if isinstance(speedup, float) else "",
        )
    return table
