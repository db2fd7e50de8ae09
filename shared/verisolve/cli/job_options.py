"""The job options `verisolve solve` and `verisolve submit` share, and the JobSpec they build.

A command takes one parameter `options: JobOptions` and is registered through
`with_job_options`, which puts the options below in its place; `job_spec(options)` then builds
the validated JobSpec.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, get_type_hints

import typer

from verisolve.cli.line_errors import fail
from verisolve.pipeline.jobs import JobError, JobSpec
from verisolve.selection import Strategy
from verisolve.settings import get_settings

DEFAULTS = JobSpec(generator="")
NO_VERIFIER = "none"
_PANEL = "Job options"

GeneratorOption = Annotated[
    str | None,
    typer.Option(
        "--generator",
        help="Generator model name \\[default: from the settings]",
        rich_help_panel=_PANEL,
    ),
]
VerifierOption = Annotated[
    str | None,
    typer.Option(
        "--verifier",
        help=f"Verifier model name; '{NO_VERIFIER}' for none \\[default: from the settings]",
        rich_help_panel=_PANEL,
    ),
]
SamplesOption = Annotated[
    int,
    typer.Option(
        "--samples", "-n", min=1, help="Candidates per problem (N)", rich_help_panel=_PANEL
    ),
]
MaxNewTokensOption = Annotated[
    int,
    typer.Option(
        "--max-new-tokens", min=1, help="Longest solution, in tokens", rich_help_panel=_PANEL
    ),
]
TemperatureOption = Annotated[
    float,
    typer.Option(
        "--temperature", min=0.0, help="Sampling temperature (0: greedy)", rich_help_panel=_PANEL
    ),
]
TopPOption = Annotated[
    float,
    typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass", rich_help_panel=_PANEL),
]
TopKOption = Annotated[
    int,
    typer.Option(
        "--top-k", min=0, help="Sample from the k likeliest tokens (0: all)", rich_help_panel=_PANEL
    ),
]
StrategyOption = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        help=(
            f"Answer selection: {', '.join(s.value for s in Strategy)} "
            "\\[default: topk-vote with a verifier, majority without]"
        ),
        rich_help_panel=_PANEL,
    ),
]
VoteKOption = Annotated[
    int,
    typer.Option(
        "--vote-k", min=1, help="k of topk-vote and of the curves", rich_help_panel=_PANEL
    ),
]
SeedOption = Annotated[
    int, typer.Option("--seed", help="Random seed of the sampling", rich_help_panel=_PANEL)
]
NameOption = Annotated[
    str, typer.Option("--name", help="A name to find the job by", rich_help_panel=_PANEL)
]


@dataclass(frozen=True)
class JobOptions:
    """The job options as the user gave them (None: the settings decide)."""

    generator: GeneratorOption = None
    verifier: VerifierOption = None
    samples: SamplesOption = DEFAULTS.n_samples
    max_new_tokens: MaxNewTokensOption = DEFAULTS.max_new_tokens
    temperature: TemperatureOption = DEFAULTS.temperature
    top_p: TopPOption = DEFAULTS.top_p
    top_k: TopKOption = DEFAULTS.top_k
    strategy: StrategyOption = None
    vote_k: VoteKOption = DEFAULTS.vote_k
    seed: SeedOption = DEFAULTS.seed
    name: NameOption = ""


def with_job_options(command: Callable[..., None]) -> Callable[..., None]:
    """The command with its `options: JobOptions` parameter spread into typer options."""
    signature = inspect.signature(command, eval_str=True)
    target = next(p.name for p in signature.parameters.values() if p.annotation is JobOptions)
    kept = [p for p in signature.parameters.values() if p.name != target]
    hints = get_type_hints(JobOptions, include_extras=True)
    added = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name], default=f.default
        )
        for f in fields(JobOptions)
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        values = {f.name: kwargs.pop(f.name) for f in fields(JobOptions)}
        command(*args, **{target: JobOptions(**values)}, **kwargs)

    parameters = [*kept, *added]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def job_spec(options: JobOptions, *, owner: str = DEFAULTS.owner) -> JobSpec:
    """The JobSpec of the options, validated; a bad option exits 1 with a message naming it."""
    settings = get_settings()
    verifier = options.verifier
    if verifier is None:
        verifier = settings.default_verifier
    elif verifier.lower() == NO_VERIFIER:
        verifier = None
    spec = JobSpec(
        generator=options.generator or settings.default_generator,
        verifier=verifier or None,
        n_samples=options.samples,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        max_new_tokens=options.max_new_tokens,
        seed=options.seed,
        strategy=options.strategy,
        vote_k=options.vote_k,
        owner=owner,
        name=options.name,
    )
    try:
        spec.validate()
    except JobError as exc:
        fail(f"bad job option: {exc}")
        raise typer.Exit(1) from None
    return spec
