"""`verisolve bench train`: training tokens/s and the share of the machine's matmul peak."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verisolve.cli.line_errors import fail
from verisolve.modelstore.export import HF_SUBDIR
from verisolve.settings import get_settings

console = Console()


def _hf_dir(model: str | None) -> Path | None:
    """The Hugging Face weights of a store model or directory; None: default not installed."""
    from verisolve.cli.bench import resolve_model
    from verisolve.modelstore.default import is_installed

    if model is None:
        target = get_settings().models_path / get_settings().default_generator
        if not is_installed(target):
            return None
    path = Path(model).expanduser() if model else None
    if path is not None and (path / "config.json").is_file():
        return path
    model_dir = resolve_model(model)
    if not (model_dir / HF_SUBDIR / "config.json").is_file():
        raise ValueError(f"{model_dir} keeps no Hugging Face weights ({HF_SUBDIR}/) to train")
    return model_dir / HF_SUBDIR


def train(
    model: Annotated[
        str | None,
        typer.Option(help="Store model, model dir or HF dir (default: the default generator)."),
    ] = None,
    seq_len: Annotated[int, typer.Option(min=8, help="Tokens per row.")] = 256,
    rows: Annotated[int, typer.Option(min=1, help="Rows per step.")] = 8,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps (after one warm-up).")] = 3,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Training tokens/s in fp32 and bf16, against torch.matmul's peak measured in the run."""
    from verisolve.benchmarks.train import TrainBenchSetup, run_bench
    from verisolve.modelstore.registry import ModelNotFoundError

    try:
        hf_dir = _hf_dir(model)
        if hf_dir is None:
            console.print(
                "bench train: skipped: the default model is not installed "
                "(run `verisolve models install-default`, or pass --model)"
            )
            return
        setup = TrainBenchSetup(hf_dir, seq_len=seq_len, rows=rows, steps=steps, threads=threads)
        result = run_bench(setup)
    except (ModelNotFoundError, ValueError, OSError) as exc:
        fail(f"bench train: {exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"{result['model']}: {rows} x {seq_len} tokens a step")
    for column in ("precision", "s/step", "tokens/s", "TFLOP/s", "matmul peak", "of peak"):
        table.add_column(column, justify="right")
    for precision in setup.precisions:
        r = result[precision]
        table.add_row(
            precision,
            f"{r['step_seconds']:.2f}",
            f"{r['tokens_per_s']:.0f}",
            f"{r['achieved_tflops']:.3f}",
            f"{r['matmul_peak_tflops']:.3f}",
            f"{100 * r['fraction_of_peak']:.1f}%",
        )
    console.print(table)
