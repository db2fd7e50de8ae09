"""`verisolve models`: export models to ONNX, install the default generator, show the registry."""

from __future__ import annotations

import enum
import os
import re
import shutil
import time
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from verisolve.cli.database import require_schema
from verisolve.cli.line_errors import fail
from verisolve.db import get_engine, session_scope
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest, PromptSpec
from verisolve.settings import get_settings

app = typer.Typer(
    help="Model directories: export to ONNX, install the default generator, list the registry, "
    "remove models.",
    no_args_is_help=True,
)
console = Console()

# A model name becomes a directory name under the models directory.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Kind(enum.StrEnum):
    """What an exported model does."""

    GENERATOR = "generator"
    VERIFIER = "verifier"


class ScoreForm(enum.StrEnum):
    """Where a verifier reads its score."""

    SEQUENCE = "sequence"
    TOKEN = "token"


def _engine() -> sa.Engine:
    """The configured database, migrated to the newest schema."""
    engine = get_engine(get_settings().database_url)
    require_schema(engine)
    return engine


def _register(manifest: Manifest, path: Path) -> None:
    """Record a model directory in the registry and say what changed."""
    with session_scope(_engine()) as session:
        done = registry.register(session, manifest, path)
        sha = done.artifact.sha256[:12]
    if done.change is registry.Change.REPLACED:
        old = (done.previous_sha256 or "")[:12]
        console.print(f"Replaced the registered {manifest.name!r} (sha256 {old} -> {sha})")
    elif done.change is registry.Change.ADDED:
        console.print(f"Registered {manifest.kind} {manifest.name!r} (sha256 {sha})")
    else:
        console.print(f"Registry entry {manifest.name!r} {done.change} (sha256 {sha})")


def _export(
    hf_dir: Path,
    out_dir: Path,
    *,
    kind: Kind,
    name: str,
    int8: bool,
    score_form: ScoreForm,
    few_shot: bool,
    row_scaled: bool = False,
) -> Manifest:
    """Run the exporter for `kind` (imported here: it needs the export extra)."""
    source = str(hf_dir.resolve())
    if kind is Kind.GENERATOR:
        from verisolve.modelstore.exemplars import STOP_STRINGS, default_prompt
        from verisolve.modelstore.export import export_generator

        return export_generator(
            hf_dir,
            out_dir,
            name=name,
            int8=int8,
            row_scaled=row_scaled,
            prompt=default_prompt() if few_shot else PromptSpec(),
            stop=list(STOP_STRINGS),
            source=source,
            overwrite=True,
        )
    from verisolve.modelstore.verifier_export import export_verifier

    return export_verifier(
        hf_dir,
        out_dir,
        name=name,
        int8=int8,
        score_form="token" if score_form is ScoreForm.TOKEN else "sequence",
        source=source,
        overwrite=True,
    )


@app.command()
def export(
    hf_dir: Annotated[
        Path, typer.Argument(help="A Hugging Face model directory (config, weights, tokenizer).")
    ],
    kind: Annotated[Kind, typer.Option(help="generator or verifier.")],
    name: Annotated[str, typer.Option(help="Registry name; also the directory name.")],
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="int8 weights with per-row int8 activations; 8-bit blocks for the LM head and "
            'the MLP down projections (CPU; README "Models").',
        ),
    ] = False,
    score_form: Annotated[
        ScoreForm | None, typer.Option(help="Verifiers: one score per sequence or per token.")
    ] = None,
    few_shot: Annotated[
        bool,
        typer.Option(
            "--few-shot", help="Generators: prompt with our 4 GSM8K-format worked examples."
        ),
    ] = False,
    row_scaled: Annotated[
        bool,
        typer.Option(
            "--row-scaled",
            help="Generators, with --int8: every weight product int8, activations scaled per "
            "row, the down projections' outlier channels in fp32 (see README).",
        ),
    ] = False,
) -> None:
    """Export HF_DIR to ONNX into the models directory and register it as NAME."""
    from verisolve.modelstore.export import ExportError

    if not _NAME.fullmatch(name):
        fail(f"--name {name!r}: use letters, digits, '.', '_' and '-' (128 at most)")
        raise typer.Exit(1)
    if score_form is not None and kind is Kind.GENERATOR:
        fail("--score-form applies to verifiers only")
        raise typer.Exit(1)
    if few_shot and kind is Kind.VERIFIER:
        fail("--few-shot applies to generators only")
        raise typer.Exit(1)
    if row_scaled and (kind is Kind.VERIFIER or not int8):
        fail("--row-scaled applies to generators exported with --int8 only")
        raise typer.Exit(1)
    if not hf_dir.is_dir():
        fail(f"{hf_dir}: no such directory")
        raise typer.Exit(1)
    out_dir = get_settings().models_path / name
    start = time.perf_counter()
    try:
        manifest = _export(
            hf_dir,
            out_dir,
            kind=kind,
            name=name,
            int8=int8,
            score_form=score_form or ScoreForm.SEQUENCE,
            few_shot=few_shot,
            row_scaled=row_scaled,
        )
    except (ExportError, OSError, ValueError) as exc:
        fail(f"cannot export {hf_dir}: {exc}")
        raise typer.Exit(1) from None
    elapsed = time.perf_counter() - start
    console.print(f"Exported {kind} {name!r} to {out_dir} in {elapsed:.1f}s")
    _register(manifest, out_dir)


@app.command("install-default")
def install_default(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if installed.")] = False,
) -> None:
    """Build the default generator (SmolLM2-135M-Instruct, int8) once and register it."""
    from verisolve.modelstore import default

    models_dir = get_settings().models_path
    target = default.default_model_dir(models_dir)
    if default.is_installed(target) and not force:
        console.print(f"The default generator is already installed at {target}")
    else:
        console.print(f"Building the default generator into {target} (about two minutes)")
        start = time.perf_counter()
        try:
            default.install_default(
                models_dir, force=force, on_stage=lambda line: console.print(f"  {line}")
            )
        except default.DefaultModelError as exc:
            fail(str(exc))
            raise typer.Exit(1) from None
        console.print(f"Installed in {time.perf_counter() - start:.0f}s")
    _register(Manifest.load(target), target)


@app.command("list")
def list_(
    kind: Annotated[Kind | None, typer.Option(help="Only this kind.")] = None,
) -> None:
    """Show the registered models (a model stored elsewhere than NAME/ in the store is listed)."""
    store = get_settings().models_path.resolve()
    with session_scope(_engine()) as session:
        rows = registry.list_models(session, kind)
        table = Table(box=box.MINIMAL_HEAVY_HEAD, pad_edge=False)
        for column in ("name", "kind", "int8", "size", "sha256", "created"):
            table.add_column(column, no_wrap=column != "name", overflow="fold")
        elsewhere: list[tuple[str, str]] = []
        for row in rows:
            manifest = Manifest.model_validate(row.manifest)
            table.add_row(
                row.name,
                row.kind,
                "yes" if manifest.int8 else "no",
                _size(Path(row.path), manifest),
                row.sha256[:12],
                row.created_at.strftime("%Y-%m-%d"),
            )
            if Path(row.path) != store / row.name:
                elsewhere.append((row.name, row.path))
    console.print(f"Model store: {store}", markup=False, highlight=False)
    if not rows:
        console.print("No models registered (try `verisolve models install-default`).")
        return
    console.print(table)
    for name, path in elsewhere:
        console.print(f"{name}: {path}", markup=False, highlight=False)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="A registered name or a model directory.")],
) -> None:
    """Print the manifest of a model."""
    with session_scope(_engine()) as session:
        try:
            path = registry.resolve(session, name)
        except registry.ModelNotFoundError as exc:
            fail(str(exc))
            raise typer.Exit(1) from None
    console.print(str(path), style="bold", markup=False, highlight=False)
    console.print_json(Manifest.load(path).model_dump_json())


@app.command()
def remove(
    names: Annotated[list[str], typer.Argument(help="Registered model names.")],
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="Unregister only; leave the directory.")
    ] = False,
) -> None:
    """Unregister models and delete their directories from the model store (all or none).

    Refused while a pending or running job uses one. A model outside the store: unregistered only.
    """
    store = get_settings().models_path.resolve()
    moved: list[tuple[Path, Path]] = []  # (the model's directory, where it waits for deletion)
    left: list[tuple[str, str]] = []
    try:
        with session_scope(_engine()) as session:
            for row in registry.unregister(session, names):
                path = Path(row.path)
                if keep_files or path != store / row.name:
                    left.append((row.name, row.path))
                elif path.is_dir():
                    # Out of the store's names before the commit, so that nothing half-deleted
                    # stays under NAME; put back below if the commit fails.
                    waiting = store / f".{row.name}.removing-{os.getpid()}"
                    path.rename(waiting)
                    moved.append((path, waiting))
    except BaseException as exc:
        for path, waiting in reversed(moved):
            waiting.rename(path)
        if isinstance(exc, registry.ModelNotFoundError | registry.ModelInUseError | OSError):
            fail(str(exc))
            raise typer.Exit(1) from None
        raise
    for path, waiting in moved:
        shutil.rmtree(waiting)
        _say(f"Removed {path.name!r} and deleted {path}")
    for name, where in left:
        _say(f"Removed {name!r} from the registry; its files stay at {where}")


def _say(line: str) -> None:
    """Print a line that holds a path as it is, unwrapped, so that it can be copied."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _size(path: Path, manifest: Manifest) -> str:
    """The total size of the model's ONNX files, or 'missing' when any is gone."""
    files = [path / name for name in manifest.files]
    if not files or not all(f.is_file() for f in files):
        return "missing"
    total = float(sum(f.stat().st_size for f in files))
    for unit in ("B", "KB", "MB"):
        if total < 1024:
            return f"{total:.0f} {unit}"
        total /= 1024
    return f"{total:.1f} GB"
