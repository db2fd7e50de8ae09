"""`verisolve solve`: the main job, every stage in this process on the embedded database."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from verisolve.cli.database import require_schema
from verisolve.cli.job_options import JobOptions, job_spec
from verisolve.cli.line_errors import fail, print_line_errors
from verisolve.cli.reporting import console, show_report
from verisolve.db import get_engine, session_scope
from verisolve.evaluation import evaluate
from verisolve.executors.inline import InlineExecutor, ProblemDone
from verisolve.jsonl import write_jsonl
from verisolve.modelstore.registry import ModelNotFoundError
from verisolve.pipeline.jobs import JobError, JobSpec, create_job, find_job
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.results import answer_rows
from verisolve.pipeline.stages import job_candidates
from verisolve.problems import ProblemFileError, ProblemIn, load_problems
from verisolve.tables import Job, JobStatus


def _read(path: Path) -> list[ProblemIn]:
    try:
        problems = load_problems(path)
    except ProblemFileError as exc:
        print_line_errors(path, exc, consequence="nothing was solved")
        raise typer.Exit(1) from None
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    if not problems:
        fail(f"{path}: holds no problems")
        raise typer.Exit(1)
    return problems


def _job_for(spec: JobSpec, problems: list[ProblemIn]) -> int:
    """The job these problems and parameters already have (to resume), or a new one."""
    with session_scope() as session:
        job = find_job(session, spec, problems)
        if job is not None:
            console.print(f"Resuming job {job.id} ({job.n_done}/{job.n_problems} problems done)")
            return job.id
        try:
            job, _ = create_job(session, spec, problems, limits=JobLimits.from_settings())
        except JobError as exc:
            fail(f"nothing was solved: {exc}")
            raise typer.Exit(1) from None
        console.print(f"Job {job.id}: {job.n_problems} problems, {spec.sampling.n} samples each")
        return job.id


def _run(executor: InlineExecutor, job_id: int, total: int, done: int) -> None:
    start = time.perf_counter()
    counts = {"candidates": 0, "tokens": 0}
    columns = (
        TextColumn("[bold]solving"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("solve", total=total, completed=done, rate="")

        def advance(update: ProblemDone) -> None:
            counts["candidates"] += update.candidates
            counts["tokens"] += update.tokens
            elapsed = max(time.perf_counter() - start, 1e-9)
            rate = (
                f"{counts['candidates'] / elapsed:.1f} candidates/s  "
                f"{counts['tokens'] / elapsed:.0f} tokens/s"
            )
            progress.update(task, advance=1, rate=rate)

        executor.run(job_id, on_problem=advance)


def _executor(engine: sa.Engine, metrics_port: int | None) -> InlineExecutor:
    """The inline executor, recording the workers' metrics (served when a port is given)."""
    from verisolve.executors import instrumentation as inst
    from verisolve.executors.loading import load_generator, load_scorer

    if metrics_port is not None:
        inst.start_metrics_server(metrics_port, addr="127.0.0.1")
        console.print(f"Metrics at http://127.0.0.1:{metrics_port}/metrics")
    return InlineExecutor(
        engine,
        inst.instrument_loader(load_generator, inst.instrument_generator),
        inst.instrument_loader(load_scorer, inst.instrument_scorer),
        stage_timer=inst.timed_stage,
    )


def _write_answers(job_id: int, output: Path | None) -> None:
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        rows = list(answer_rows(session, job))
        report = evaluate(job_candidates(session, job.id), k=job.vote_k, seed=job.seed)
    if output is not None:
        write_jsonl(output, rows)
        console.print(f"Answers written to {output}")
    else:
        _print_lines(json.dumps(row, ensure_ascii=False) for row in rows)
    show_report(report)


def _print_lines(lines: Iterable[str]) -> None:
    """Lines to stdout; a reader that stops early (`| head`) ends them quietly, not the command."""
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # What Python's documentation advises: point stdout at /dev/null so that the flush at
        # exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@contextmanager
def _messages_to_stderr() -> Iterator[None]:
    """Progress, notes and the report on stderr, so that stdout holds only the answer lines."""
    was = console.stderr
    console.stderr = True
    try:
        yield
    finally:
        console.stderr = was


def solve(
    problems_file: Annotated[Path, typer.Argument(help="JSONL: question, answer (optional), id.")],
    options: JobOptions,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write one JSON line per problem here.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve the workers' Prometheus metrics on this port while solving.",
        ),
    ] = None,
) -> None:
    """Solve a problem file in this process (SQLite and the default model unless configured).

    Interrupted and run again with the same file and options, it resumes where it stopped.
    Without -o the answer lines go to stdout and everything else to stderr.
    """
    with _messages_to_stderr() if output is None else nullcontext():
        _solve(problems_file, options, output, metrics_port)


def _solve(
    problems_file: Path, options: JobOptions, output: Path | None, metrics_port: int | None
) -> None:
    problems = _read(problems_file)
    spec = job_spec(options)
    engine = get_engine()
    require_schema(engine)
    from verisolve.executors.loading import ensure_models

    try:
        ensure_models(spec.generator, spec.verifier, console=console)
    except ModelNotFoundError as exc:
        fail(f"nothing was solved: {exc} (see `verisolve models list`)")
        raise typer.Exit(1) from None
    job_id = _job_for(spec, problems)
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        done, total, finished = job.n_done, job.n_problems, job.status == JobStatus.DONE
    if not finished:
        executor = _executor(engine, metrics_port)
        try:
            _run(executor, job_id, total, done)
        except KeyboardInterrupt:
            fail(f"interrupted: job {job_id} keeps what is done; run the same command to resume")
            raise typer.Exit(130) from None
    _write_answers(job_id, output)
