"""`verisolve train`: fine-tune a generator and train a verifier (the paper's recipe).

Both commands run data-parallel unchanged under `torchrun` or `accelerate launch`; the main
process validates, exports and registers.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from verisolve.cli.line_errors import fail, print_line_errors
from verisolve.settings import get_settings

app = typer.Typer(
    help="Fine-tune generators and train verifiers (needs the export extra).",
    no_args_is_help=True,
)
console = Console()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
WORK_SUBDIR = ".training"


class ScoreForm(enum.StrEnum):
    """Where a verifier reads its score."""

    TOKEN = "token"
    SEQUENCE = "sequence"


class LmOn(enum.StrEnum):
    """Which candidates a verifier's LM loss learns from."""

    ALL = "all"
    RIGHT = "right"


class Precision(enum.StrEnum):
    """Arithmetic of the training run."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


NameOpt = Annotated[
    str, typer.Option(help="Registry name of the trained model (also its directory).")
]
EpochsOpt = Annotated[int, typer.Option(min=1, help="Passes over the data.")]
LrOpt = Annotated[float, typer.Option(help="Peak learning rate (AdamW, linear decay).")]
DropoutOpt = Annotated[
    float, typer.Option(min=0.0, max=0.9, help="Residual dropout (the paper's 0.2 helps both).")
]
ValOpt = Annotated[
    float, typer.Option(min=0.0, max=0.5, help="Share of problems held out for validation.")
]
BatchOpt = Annotated[int, typer.Option(min=16, help="Padded tokens per micro-batch.")]
AccumOpt = Annotated[int, typer.Option(min=1, help="Micro-batches per optimizer step.")]
SeedOpt = Annotated[int, typer.Option(help="Seed: data split, batch order, initialisation.")]
EveryOpt = Annotated[int, typer.Option(min=1, help="Write a checkpoint every K steps.")]
PrecisionOpt = Annotated[
    Precision, typer.Option(help="auto: bf16 on a GPU that has it natively, fp32 otherwise.")
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue from the last checkpoint of this name.")
]
Int8Opt = Annotated[
    bool, typer.Option("--int8", help="Export int8, as `models export --int8` does.")
]
MaxLenOpt = Annotated[int, typer.Option(min=8, help="Longest token row trained on.")]


def is_main() -> bool:
    """Whether this is the main process (always, outside torchrun / accelerate launch)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def check_name(name: str) -> None:
    """Refuse a name that cannot be a directory under the models directory."""
    if not _NAME.fullmatch(name):
        fail(f"--name {name!r}: use letters, digits, '.', '_' and '-' (128 at most)")
        raise typer.Exit(1)


@contextmanager
def clear_errors(source: Path | None = None) -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and exit status 1."""
    from verisolve.db.migrate import SchemaError
    from verisolve.jsonl import JsonlFileError
    from verisolve.modelstore.export import ExportError
    from verisolve.training.base import BaseModelError
    from verisolve.training.data import TrainingDataError
    from verisolve.training.loop import ResumeError

    try:
        yield
    except JsonlFileError as exc:
        print_line_errors(source or Path("input"), exc, consequence="nothing was trained")
        raise typer.Exit(1) from None
    except (
        TrainingDataError,
        BaseModelError,
        ResumeError,
        ExportError,
        SchemaError,
        ValueError,
    ) as exc:
        fail(str(exc))
        raise typer.Exit(1) from None


def loop_config(**values: Any) -> Any:
    """The loop's hyperparameters from the command's options."""
    from verisolve.training.loop import LoopConfig

    values["precision"] = str(values["precision"])
    return LoopConfig(**values)


def loop_run(name: str, resume: bool) -> Any:
    """Where the run of this name keeps its checkpoints."""
    from verisolve.training.loop import LoopRun

    return LoopRun(get_settings().models_path / WORK_SUBDIR / name, resume=resume)


_LABELS = {
    "auroc": "AUROC",
    "auroc_within_problem": "AUROC within",
    "accuracy_verifier_top1": "top-1 acc",
    "accuracy_majority_vote": "majority acc",
    "accuracy_first_sample": "first acc",
}


def show_epochs(epochs: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """A table of the validation metrics of every epoch (held-out problems)."""
    table = Table("epoch", *(_LABELS.get(k, k) for k in keys), title="validation")
    for row in epochs:
        cells = [row.get(k) for k in keys]
        table.add_row(str(row["epoch"]), *("-" if c is None else f"{c:.4f}" for c in cells))
    console.print(table)


def job_ids(session: Any, text: str) -> list[int]:
    """The ids of the jobs "3", "3,4,7" or "gsm-train,4" name (an id, or a name `--name` gave)."""
    import sqlalchemy as sa

    from verisolve.tables import Job

    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        fail("--jobs: no job given")
        raise typer.Exit(1)
    ids = []
    for part in parts:
        if part.isdigit():
            ids.append(int(part))
            continue
        named = list(session.scalars(sa.select(Job.id).where(Job.name == part).order_by(Job.id)))
        if len(named) != 1:
            which = f"{len(named)} jobs are named {part!r} (ids {', '.join(map(str, named))})"
            fail(f"--jobs: {which}: give the id" if named else f"--jobs: no job named {part!r}")
            raise typer.Exit(1)
        ids.extend(named)
    return ids


def run_main_only(action: Callable[[], None]) -> None:
    """Run `action` on the main process only (printing, for instance)."""
    if is_main():
        action()


def _dataset(jobs: str | None, candidates: Path | None) -> Any:
    """The labelled candidates of the jobs or of the file (exactly one of them)."""
    from verisolve.db import get_engine, session_scope
    from verisolve.db.migrate import prepare_schema
    from verisolve.training.data import load_candidate_file, load_jobs

    if (jobs is None) == (candidates is None):
        fail("give either --jobs J[,J...] or --candidates FILE.jsonl")
        raise typer.Exit(1)
    if candidates is not None:
        return load_candidate_file(candidates)
    engine = get_engine(get_settings().database_url)
    prepare_schema(engine)
    with session_scope(engine) as session:
        return load_jobs(session, job_ids(session, jobs or ""))


def _default_base(dataset: Any) -> str:
    """The generator of the first job (the paper starts from it), else the default generator."""
    from verisolve.db import get_engine, session_scope
    from verisolve.tables import Job

    if dataset.source.get("jobs"):
        with session_scope(get_engine(get_settings().database_url)) as session:
            job = session.get(Job, dataset.source["jobs"][0])
            if job is not None:
                return job.generator
    return get_settings().default_generator


VERIFIER_KEYS = (
    "loss",
    "auroc",
    "auroc_within_problem",
    "accuracy_verifier_top1",
    "accuracy_majority_vote",
    "accuracy_first_sample",
)


@app.command("verifier")
def verifier(
    name: NameOpt,
    jobs: Annotated[
        str | None,
        typer.Option(help="Finished jobs with gold answers, by id or name: J or J,J,..."),
    ] = None,
    candidates: Annotated[
        Path | None,
        typer.Option(help='JSONL: "question", "completion", "gold" or "correct" per line.'),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(help="Store model or HF directory (default: the jobs' generator)."),
    ] = None,
    score_form: Annotated[
        ScoreForm, typer.Option(help="token: the paper's value per token; sequence: one logit.")
    ] = ScoreForm.TOKEN,
    epochs: EpochsOpt = 1,
    learning_rate: LrOpt = 1e-5,
    lm_weight: Annotated[
        float, typer.Option(min=0.0, help="Weight of the joint language-modelling loss.")
    ] = 1.0,
    rank_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Weight of a within-problem ranking loss on the scores of each problem's "
            "right and wrong candidates (0: the paper's recipe, value loss only).",
        ),
    ] = 0.0,
    value_weight: Annotated[
        float, typer.Option(min=0.0, help="Weight of the value loss (MSE per token, or BCE).")
    ] = 1.0,
    likelihood_features: Annotated[
        bool,
        typer.Option(
            help="Token form: the value also reads each solution token's log-probability "
            "under the verifier's LM head (and their running mean, minimum and count of "
            "unlikely tokens), starting as a ranking by mean log-probability.",
        ),
    ] = False,
    lm_on: Annotated[
        LmOn,
        typer.Option(
            help="Candidates the LM loss learns from: all (the paper's), or the right ones "
            "only (an LM of right solutions, for --likelihood-features).",
        ),
    ] = LmOn.ALL,
    likelihood_learning_rate: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Learning rate of the --likelihood-features head (default: --learning-rate).",
        ),
    ] = None,
    value_head: Annotated[
        bool,
        typer.Option(
            help="The value head on the hidden states adds to the score (--no-value-head: "
            "the score is the --likelihood-features head alone).",
        ),
    ] = True,
    likelihood_gradient: Annotated[
        bool,
        typer.Option(
            help="The value and ranking losses also train the trunk and LM head through the "
            "log-probabilities the --likelihood-features head reads (default: those are "
            "fixed features, and only the LM loss trains the trunk).",
        ),
    ] = False,
    share_prompts: Annotated[
        bool,
        typer.Option(
            help="A problem's candidates in a batch read their shared prompt once (faster "
            "the more candidates per problem; with --dropout the prompt's mask is shared too).",
        ),
    ] = False,
    dropout: DropoutOpt = 0.0,
    val_fraction: ValOpt = 0.1,
    batch_tokens: BatchOpt = 4096,
    accumulation: AccumOpt = 4,
    seed: SeedOpt = 0,
    checkpoint_every: EveryOpt = 100,
    precision: PrecisionOpt = Precision.AUTO,
    max_length: MaxLenOpt = 1024,
    resume: ResumeOpt = False,
    int8: Int8Opt = False,
) -> None:
    """Train a verifier on labelled candidates, export it to ONNX and register it as NAME."""
    from verisolve.training.base import resolve_base
    from verisolve.training.verifier import VerifierOptions, train_verifier

    check_name(name)
    config = loop_config(
        epochs=epochs,
        learning_rate=learning_rate,
        batch_tokens=batch_tokens,
        accumulation=accumulation,
        seed=seed,
        checkpoint_every=checkpoint_every,
        precision=precision,
    )
    with clear_errors(candidates):
        options = VerifierOptions(
            score_form=str(score_form),
            lm_weight=lm_weight,
            rank_weight=rank_weight,
            value_weight=value_weight,
            likelihood_features=likelihood_features,
            lm_on=str(lm_on),
            likelihood_lr=likelihood_learning_rate,
            value_head=value_head,
            likelihood_gradient=likelihood_gradient,
            share_prompts=share_prompts,
            dropout=dropout,
            val_fraction=val_fraction,
            max_length=max_length,
            int8=int8,
        )
        dataset = _dataset(jobs, candidates)
        base_model = resolve_base(base or _default_base(dataset))
        manifest = train_verifier(
            dataset, base_model, name, config, options, loop_run(name, resume)
        )
    if manifest is not None and manifest.training is not None:
        show_epochs(manifest.training["epochs"], VERIFIER_KEYS)
        console.print(f"Registered verifier {name!r} ({score_form} form)")


@app.command("generator")
def generator(
    data: Annotated[
        Path, typer.Argument(help="Problems with worked answers (GSM8K format, JSONL).")
    ],
    name: NameOpt,
    base: Annotated[
        str | None,
        typer.Option(help="Store model (kept HF weights) or HF directory (default: the default)."),
    ] = None,
    shots: Annotated[
        int, typer.Option(min=0, help="Exemplars kept in the prompt (the paper: none).")
    ] = 0,
    epochs: EpochsOpt = 2,
    learning_rate: LrOpt = 1e-5,
    dropout: DropoutOpt = 0.0,
    val_fraction: ValOpt = 0.05,
    batch_tokens: BatchOpt = 4096,
    accumulation: AccumOpt = 4,
    seed: SeedOpt = 0,
    checkpoint_every: EveryOpt = 100,
    precision: PrecisionOpt = Precision.AUTO,
    max_length: MaxLenOpt = 1024,
    resume: ResumeOpt = False,
    int8: Int8Opt = False,
) -> None:
    """Fine-tune a generator on worked solutions, export it and register it as NAME."""
    from verisolve.training.base import resolve_base
    from verisolve.training.data import load_solutions
    from verisolve.training.generator import GeneratorOptions, train_generator

    check_name(name)
    config = loop_config(
        epochs=epochs,
        learning_rate=learning_rate,
        batch_tokens=batch_tokens,
        accumulation=accumulation,
        seed=seed,
        checkpoint_every=checkpoint_every,
        precision=precision,
    )
    options = GeneratorOptions(
        dropout=dropout, val_fraction=val_fraction, max_length=max_length, int8=int8
    )
    with clear_errors(data):
        solutions, source = load_solutions(data)
        base_model = resolve_base(base or get_settings().default_generator, shots=shots)
        manifest = train_generator(
            solutions, source, base_model, name, config, options, loop_run(name, resume)
        )
    if manifest is not None and manifest.training is not None:
        before = manifest.training.get("loss_before")
        if before is not None:
            console.print(f"held-out loss before fine-tuning: {before:.4f}")
        show_epochs(manifest.training["epochs"], ("loss", "perplexity"))
        console.print(f"Registered generator {name!r}: verisolve solve --generator {name}")
