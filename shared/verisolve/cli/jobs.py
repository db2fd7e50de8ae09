"""Jobs on Celery: `verisolve submit | status | resume | cancel`, `worker` and `relay`."""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from verisolve.cli import job_options as opt
from verisolve.cli import remote
from verisolve.cli.database import require_schema
from verisolve.cli.line_errors import fail, print_line_errors
from verisolve.cli.remote import ApiOption
from verisolve.db import get_engine, session_scope
from verisolve.pipeline import jobs
from verisolve.pipeline.jobs import JobError, JobInvalid
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.routes import QueueName
from verisolve.problems import ProblemFileError, ProblemIn, load_problems
from verisolve.settings import get_settings
from verisolve.tables import Job, Problem

console = Console()
JobArgument = Annotated[int, typer.Argument(help="The job id `verisolve submit` printed.")]
OPTION_FIELDS = {f.name for f in fields(opt.JobOptions)}


def _load(problems_file: Path) -> list[ProblemIn]:
    try:
        problems = load_problems(problems_file)
    except ProblemFileError as exc:
        print_line_errors(problems_file, exc, consequence="no job was created")
        raise typer.Exit(1) from None
    except OSError as exc:
        fail(f"cannot read {problems_file}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    if not problems:
        fail(f"{problems_file}: holds no problems; no job was created.")
        raise typer.Exit(1)
    return problems


def submit(
    problems_file: Annotated[Path, typer.Argument(help="JSONL: {question, answer?, id?}.")],
    options: opt.JobOptions,
    api: ApiOption = None,
) -> None:
    """Create a job and enqueue it for the workers (in the database, or through --api)."""
    spec = opt.job_spec(replace(options, name=options.name or problems_file.name))
    if api:
        remote.submit_remote(api, problems_file, spec)
        return
    problems = _load(problems_file)
    engine = get_engine()
    require_schema(engine)
    try:
        with session_scope(engine) as session:
            job, _ = jobs.create_job(session, spec, problems, limits=JobLimits.from_settings())
            jobs.start_job(session, job)
            job_id = job.id
    except JobError as exc:
        _fail_job(exc, "no job was created")
    typer.echo(job_id)


def _fail_job(exc: JobError, consequence: str = "") -> NoReturn:
    """Exit 1 with the lifecycle's refusal as one line (naming the option when it is one)."""
    message = str(exc)
    if isinstance(exc, JobInvalid):
        option = {"n_samples": "samples"}.get(exc.field, exc.field).replace("_", "-")
        message = f"--{option}: {message}" if exc.field in OPTION_FIELDS else message
    fail(f"{consequence}: {message}" if consequence else message)
    raise typer.Exit(1) from None


def job_status(session: Session, job: Job) -> dict[str, Any]:
    """A job's state, progress and (once done) metrics, as JSON-ready values."""
    by_status = dict(
        session.execute(
            sa.select(Problem.status, sa.func.count())
            .where(Problem.job_id == job.id)
            .group_by(Problem.status)
        ).all()
    )
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "generator": job.generator,
        "verifier": job.verifier,
        "strategy": job.strategy,
        "n_samples": job.n_samples,
        "n_problems": job.n_problems,
        "n_done": job.n_done,
        "problems": {str(k): int(v) for k, v in by_status.items()},
        "error": job.error,
        "metrics": job.metrics,
    }


def _status_table(state: dict[str, Any]) -> Table:
    table = Table(title=f"job {state['id']} {state['name']}".strip(), show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    done, total = state["n_done"], state["n_problems"]
    share = f" ({100 * done / total:.0f}%)" if total else ""
    rows = [
        ("status", state["status"]),
        ("progress", f"{done:,} / {total:,} problems{share}"),
        ("stages", ", ".join(f"{k} {v:,}" for k, v in sorted(state["problems"].items()))),
        ("models", f"{state['generator']} + {state['verifier'] or 'no verifier'}"),
        ("selection", f"{state['strategy']}, N = {state['n_samples']}"),
    ]
    if state["error"]:
        rows.append(("error", state["error"]))
    metrics = state["metrics"] or {}
    for strategy, accuracy in (metrics.get("strategies") or {}).items():
        rows.append((f"accuracy {strategy}", f"{100 * accuracy:.1f}%"))
    for key in ("test_at_1", "coverage"):
        if metrics.get(key) is not None:
            rows.append((key.replace("_at_", "@"), f"{100 * metrics[key]:.1f}%"))
    for field, value in rows:
        table.add_row(field, str(value))
    return table


def status(
    job_id: JobArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    api: ApiOption = None,
) -> None:
    """Show a job's status, progress, and its metrics once it is done."""
    if api:
        state = remote.status_remote(api, job_id)
    else:
        engine = get_engine()
        require_schema(engine)
        try:
            with session_scope(engine) as session:
                state = job_status(session, jobs.get_job(session, job_id))
        except JobError as exc:
            _fail_job(exc)
    if as_json:
        typer.echo(json.dumps(state))
    else:
        console.print(_status_table(state))


def resume(job_id: JobArgument) -> None:
    """Re-enqueue every problem of a job that is not done (a failed job runs again)."""
    engine = get_engine()
    require_schema(engine)
    try:
        with session_scope(engine) as session:
            count = jobs.resume_job(session, jobs.lock_job(session, job_id))
    except JobError as exc:
        _fail_job(exc)
    console.print(f"job {job_id}: {count:,} step(s) enqueued")


def cancel(job_id: JobArgument, api: ApiOption = None) -> None:
    """Cancel a job; workers skip its remaining problems."""
    if api:
        remote.cancel_remote(api, job_id)
        return
    engine = get_engine()
    require_schema(engine)
    try:
        with session_scope(engine) as session:
            jobs.cancel_job(session, jobs.lock_job(session, job_id))
    except JobError as exc:
        _fail_job(exc)
    console.print(f"job {job_id}: cancelled")


def worker(
    queue: Annotated[QueueName, typer.Argument(help="The queue to consume.")],
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            help="Processes [default: one per GPU for generate/verify (1 on CPU), 2 for aggregate]",
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run a Celery worker on one queue (prefork; models load in each process on first use)."""
    from verisolve.executors.celery_worker import start_worker

    provider = get_settings().provider
    if queue != QueueName.AGGREGATE and provider != "cpu":
        from verisolve.inference.providers import ProviderUnavailableError, check_provider_available

        # Fail now, not at the first task: ONNX Runtime would fall back to the CPU silently.
        try:
            check_provider_available(provider)
        except ProviderUnavailableError as exc:
            fail(f"worker {queue}: {exc}")
            raise typer.Exit(1) from None
    start_worker(queue, concurrency, loglevel)


def relay(
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between outbox polls.")] = 0.5,
    reconcile_every: Annotated[float, typer.Option(min=0.1, help="Seconds between checks.")] = 30,
    stale_after: Annotated[
        float, typer.Option(min=0.1, help="A problem this still (seconds) has stalled.")
    ] = 3900,
) -> None:
    """Publish the outbox to the broker and re-enqueue stalled work, until stopped."""
    from verisolve.executors.celery_app import CeleryPublisher
    from verisolve.executors.relay import RelayTimings, run_relay

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    engine = get_engine()
    require_schema(engine)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    publisher = CeleryPublisher()
    timings = RelayTimings(poll=poll, reconcile_every=reconcile_every, stale_after=stale_after)
    try:
        run_relay(engine, publisher, publisher.ready_messages, stop, timings)
    except KeyboardInterrupt:
        stop.set()


def register(app: typer.Typer) -> None:
    """Add the job commands to the `verisolve` app."""
    app.command("submit")(opt.with_job_options(submit))
    for command in (status, resume, cancel, worker, relay):
        app.command(command.__name__)(command)
