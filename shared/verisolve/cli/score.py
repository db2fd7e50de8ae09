"""`verisolve score`: score any candidate file with a registered verifier."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from verisolve.cli.database import require_schema
from verisolve.cli.line_errors import fail, print_line_errors
from verisolve.db import get_engine
from verisolve.jsonl import (
    ErrorCollector,
    InvalidLineError,
    JsonlFileError,
    OverlongLine,
    numbered_lines,
    read_object,
    required_text,
)
from verisolve.settings import get_settings

console = Console(stderr=True)
CHUNK = 256  # lines scored per call (the scorer batches them by length)


class ScoreFileError(JsonlFileError):
    """A candidate file with bad lines; nothing of it is scored."""


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line as an object with a question and a completion; raises on any bad line."""
    limit = get_settings().max_line_bytes
    rows: list[dict[str, Any]] = []
    errors = ErrorCollector()
    for line_no, raw in numbered_lines(path, limit):
        try:
            if read_object(raw, line_no, max_line_bytes=limit) is None:
                continue
            assert not isinstance(raw, OverlongLine)  # read_object refused it
            obj = json.loads(raw)  # kept as written: floats stay floats
            required_text(obj, "question")
            required_text(obj, "completion")
        except InvalidLineError as exc:
            errors.add(exc.at(line_no))
            continue
        rows.append(obj)
    if errors.count:
        raise ScoreFileError(errors.errors, errors.count)
    return rows


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


def _write(rows: list[dict[str, Any]], scorer: Any, out: Path, quiet: bool) -> None:
    """Score the rows into a temporary file beside `out`, renamed to it when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with (
            os.fdopen(handle, "w", encoding="utf-8") as sink,
            Progress(console=console, disable=quiet) as progress,
        ):
            task = progress.add_task("scoring", total=len(rows))
            for chunk in _chunks(rows):
                for obj, result in zip(chunk, _score_chunk(scorer, chunk), strict=True):
                    obj["score"] = result.score
                    if result.token_values is not None:
                        obj["token_values"] = list(result.token_values)
                    sink.write(json.dumps(obj, ensure_ascii=False) + "\n")
                progress.advance(task, len(chunk))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _score_chunk(scorer: Any, chunk: list[dict[str, Any]]) -> list[Any]:
    """Scores of a chunk's lines, in order (the scorer batches them by length)."""
    from verisolve.inference.verifier import verifier_text

    prompt = scorer.manifest.prompt
    texts = [verifier_text(prompt, o["question"], o["completion"]) for o in chunk]
    prefixes = [len(prompt.render(o["question"])) for o in chunk]
    return list(scorer.score_texts(texts, prefixes))


def score(
    candidates_file: Annotated[
        Path, typer.Argument(help="JSONL: 'question' and 'completion' per line, others kept.")
    ],
    verifier: Annotated[str, typer.Option("--verifier", help="Registry name or model dir.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where the scored lines go.")],
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Score every line of a candidate file with a verifier; write each line with its score."""
    from verisolve.executors.loading import load_scorer
    from verisolve.modelstore.registry import ModelNotFoundError

    try:
        rows = read_lines(candidates_file)
    except ScoreFileError as exc:
        print_line_errors(candidates_file, exc, consequence="nothing was scored")
        raise typer.Exit(1) from None
    except OSError as exc:
        fail(f"cannot read {candidates_file}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    if not rows:
        fail(f"{candidates_file}: holds no candidates")
        raise typer.Exit(1)
    require_schema(get_engine(get_settings().database_url))
    try:
        scorer = load_scorer(verifier)
    except (ModelNotFoundError, ValueError) as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
    _write(rows, scorer, output, quiet)
    console.print(f"Scored {len(rows):,} candidates into {output}")
