"""The job options `verisolve solve` and `verisolve submit` share, and the JobSpec they build.

A command takes one parameter `options: JobOptions` and is registered through
`with_job_options`, which puts the options below in its place; `job_spec(options)` then builds
the validated JobSpec.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any, get_type_hints

import typer

from verisolve.cli.line_errors import fail
from verisolve.modelstore.registry import NAME_RULE, is_model_name
from verisolve.pipeline.errors import JobInvalid
from verisolve.pipeline.spec import JobSpec, sampling_from
from verisolve.selection import Strategy
from verisolve.settings import get_settings

DEFAULTS = JobSpec(generator="")
SAMPLING = DEFAULTS.sampling
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
    n_samples: SamplesOption = SAMPLING.n
    max_new_tokens: MaxNewTokensOption = SAMPLING.max_new_tokens
    temperature: TemperatureOption = SAMPLING.temperature
    top_p: TopPOption = SAMPLING.top_p
    top_k: TopKOption = SAMPLING.top_k
    strategy: StrategyOption = None
    vote_k: VoteKOption = DEFAULTS.vote_k
    seed: SeedOption = SAMPLING.seed
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
    try:
        spec = JobSpec(
            generator=settings.default_generator
            if options.generator is None
            else options.generator,
            verifier=verifier,
            sampling=sampling_from(asdict(options)),
            strategy=options.strategy,
            vote_k=options.vote_k,
            owner=owner,
            name=options.name,
        )
        spec.validate()
        for kind, name in (("generator", spec.generator), ("verifier", spec.verifier)):
            if name is not None and not is_model_name(name):
                raise JobInvalid(kind, f"{name!r} is not a model name ({NAME_RULE})")
    except JobInvalid as exc:
        option = {"n_samples": "samples"}.get(exc.field, exc.field).replace("_", "-")
        fail(f"bad job option --{option}: {exc}")
        raise typer.Exit(1) from None
    return spec
