"""`verisolve repro mini`: the paper's result in miniature, end to end on one machine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from verisolve.cli.line_errors import fail
from verisolve.synth import MAX_STEPS

app = typer.Typer(help="Reproduce the paper's result at small scale.", no_args_is_help=True)
console = Console()


@app.command()
def mini(
    out: Annotated[
        Path, typer.Option(help="Folder of the run: data, models, database, result.")
    ] = Path("repro-mini"),
    seed: Annotated[int, typer.Option(help="Seed of the data, the models and the sampling.")] = 0,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Tiny sizes: checks every stage runs.")
    ] = False,
    scale: Annotated[
        bool,
        typer.Option(
            "--scale", help="Toward the paper's shape: N = 100 (more than a day on a 2-core CPU)."
        ),
    ] = False,
    gen_problems: Annotated[
        int | None, typer.Option(min=2, help="Problems the generator is fine-tuned on.")
    ] = None,
    ver_problems: Annotated[
        int | None, typer.Option(min=2, help="Training problems sampled for the verifier.")
    ] = None,
    train_samples: Annotated[
        int | None, typer.Option(min=1, help="Samples per verifier-training problem.")
    ] = None,
    test_problems: Annotated[int | None, typer.Option(min=1, help="Test problems.")] = None,
    test_samples: Annotated[
        int | None, typer.Option(min=1, help="Samples per test problem (N).")
    ] = None,
    ver_base_problems: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Problems the verifier's starting model is trained on (0: the verifier "
            "starts from the generator, as in the paper).",
        ),
    ] = None,
    min_steps: Annotated[
        int | None, typer.Option(min=2, max=MAX_STEPS, help="Fewest steps of a problem.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=2, max=MAX_STEPS, help="Most steps of a problem.")
    ] = None,
    distractors: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Share of problems with a sentence whose number is unused."
        ),
    ] = None,
    likelihood_features: Annotated[
        bool | None,
        typer.Option(
            help="The verifier scores by a head on its LM's log-probabilities of the "
            "solution (--no-likelihood-features: the paper's value head)."
        ),
    ] = None,
    ver_layers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Layers of the verifier's starting model, when it is to have a shape of its "
            "own (default: the run's, as the generator's).",
        ),
    ] = None,
    ver_hidden: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Hidden size of the verifier's starting model (default: the run's); a multiple "
            "of the run's head size (64 but for --smoke), which its heads keep.",
        ),
    ] = None,
    ver_base_learning_rate: Annotated[
        float | None,
        typer.Option(
            help="Learning rate of the verifier's starting model (default: the generator's, "
            "2e-3; 1e-3 for 6 layers of 320, see docs/repro-mini.md).",
        ),
    ] = None,
    share_prompts: Annotated[
        bool | None,
        typer.Option(
            help="The verifiers' training reads each problem's prompt once for all its "
            "candidates (`train verifier --share-prompts`).",
        ),
    ] = None,
) -> None:
    """Synthetic data → a Llama from scratch → train generator → sample → train verifier → solve.

    Each stage is a verisolve command on the run's own SQLite database and model store; run it
    again and finished stages are skipped (the folder keeps its run's sizes and seed in
    run.json, and refuses other ones). Writes result.json and result.png into --out.
    """
    from verisolve.repro.mini import (
        MINI,
        SCALE,
        SMOKE,
        ReproError,
        Run,
        SettingsMismatchError,
        run_mini,
    )

    if smoke and scale:
        fail("--smoke and --scale exclude each other")
        raise typer.Exit(1)
    sizes = SMOKE if smoke else SCALE if scale else MINI
    given: dict[str, Any] = {
        "gen_problems": gen_problems,
        "ver_problems": ver_problems,
        "train_samples": train_samples,
        "test_problems": test_problems,
        "test_samples": test_samples,
        "ver_base_problems": ver_base_problems,
        "ver_likelihood": likelihood_features,
        "min_steps": min_steps,
        "max_steps": max_steps,
        "distractor_rate": distractors,
        "ver_base_lr": ver_base_learning_rate,
        "ver_share_prompts": share_prompts,
    }
    if ver_layers is not None or ver_hidden is not None:
        shape = sizes.shape
        head = shape.hidden // shape.heads
        hidden = shape.hidden if ver_hidden is None else ver_hidden
        if hidden % head:
            fail(f"--ver-hidden {hidden} is not a multiple of the run's head size, {head}")
            raise typer.Exit(1)
        given["ver_shape"] = replace(
            shape, layers=shape.layers if ver_layers is None else ver_layers, hidden=hidden,
            heads=hidden // head,
        )  # fmt: skip
    try:
        sizes = replace(sizes, **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
    run = Run(out.resolve(), sizes, seed, say=lambda line: console.print(line, style="bold"))
    try:
        result = run_mini(run)
    except SettingsMismatchError as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
    except ReproError as exc:
        fail(f"{exc}; run the same command again to resume")
        raise typer.Exit(1) from None
    acc, ci = result["accuracy"], result["ci95"]["accuracy"]
    console.print(f"{result['test_problems']} test problems, N = {result['n_samples']}:")
    for name, value in acc.items():
        low, high = ci[name]
        console.print(
            f"  {name:<14} {100 * value:5.1f}%  (95% CI {100 * low:.1f} to {100 * high:.1f})"
        )
    sweep = "  ".join(
        f"k={k} {100 * v['accuracy']:.1f}%" for k, v in result["topk_vote_by_k"].items()
    )
    console.print(f"  top-k vote by k: {sweep}", soft_wrap=True)
    console.print("Verifier top-1 and majority vote against the verifier's training problems:")
    for point in result["scaling"]:
        low, high = point["ci95"]["verifier"]
        console.print(
            f"  {point['train_problems']:>6} problems  verifier {100 * point['verifier']:5.1f}%"
            f"  (95% CI {100 * low:.1f} to {100 * high:.1f})"
            f"  majority {100 * point['majority']:.1f}%",
            soft_wrap=True,
        )
    gain = result["scaling_gain"]
    fewest, most = gain["train_problems"]
    low, high = gain["ci95"]
    console.print(
        f"  gain over majority vote, {most} problems against {fewest}:"
        f" {100 * gain['verifier - majority']:+.1f} points"
        f" (95% CI {100 * low:+.1f} to {100 * high:+.1f})",
        soft_wrap=True,
    )
    console.print(f"Result: {run.file('result.json')} and {run.file('result.png')}")
