"""The CLI's path to the submission service, taken when `--api URL` or VERISOLVE_API_URL is set.

The key comes from VERISOLVE_API_KEY. `submit_remote` is safe to run again: the job is found
by an idempotency key (a digest of the options and the file), and problem ids make a chunk sent
twice a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from verisolve.cli.line_errors import err_console, fail, print_line_errors
from verisolve.client import ApiError, Chunk, Client, UploadSummary
from verisolve.evaluation import CalculatorStats, EvaluationReport
from verisolve.jsonl import JsonlFileError
from verisolve.pipeline.jobs import JobSpec
from verisolve.selection import Strategy

API_URL_ENV = "VERISOLVE_API_URL"
API_KEY_ENV = "VERISOLVE_API_KEY"

ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar=API_URL_ENV,
        metavar="URL",
        help="Submission service to use instead of the database (key: VERISOLVE_API_KEY).",
    ),
]
console = Console()


@contextmanager
def connect(api_url: str) -> Iterator[Client]:
    """A client of the service, with the key from the environment; API errors exit 1."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        fail(f"{API_KEY_ENV} is not set: create a key with `verisolve keys create --tenant T`")
        raise typer.Exit(1)
    try:
        with Client(api_url, key) as client:
            yield client
    except ApiError as exc:
        fail(f"{api_url}: {exc}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        fail(f"{api_url}: cannot reach the service: {exc}")
        raise typer.Exit(1) from None


def job_parameters(spec: JobSpec, problems_file: Path) -> dict[str, Any]:
    """The request body that creates the job, keyed by a digest of options and file."""
    body = {k: v for k, v in spec.columns().items() if k != "owner"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode())
    with problems_file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return body | {"idempotency_key": digest.hexdigest()}


def submit_remote(api_url: str, problems_file: Path, spec: JobSpec) -> int:
    """Create the job, upload the file in chunks, start it; prints and returns the job id."""
    try:
        parameters = job_parameters(spec, problems_file)
    except OSError as exc:
        fail(f"cannot read {problems_file}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    with connect(api_url) as client:
        job = client.create_job(parameters)
        if job["status"] != "pending":
            err_console.print(f"job {job['id']} was submitted before; it is {job['status']}")
            typer.echo(job["id"])
            return int(job["id"])
        summary = _upload(client, int(job["id"]), problems_file)
        if summary.n_errors:
            client.cancel_job(job["id"])
            bad = JsonlFileError(summary.errors, summary.n_errors)
            print_line_errors(problems_file, bad, consequence=f"job {job['id']} was cancelled")
            raise typer.Exit(1)
        if summary.received == 0:
            client.cancel_job(job["id"])
            fail(f"{problems_file}: holds no problems; job {job['id']} was cancelled.")
            raise typer.Exit(1)
        client.start_job(job["id"])
    err_console.print(
        f"job {job['id']}: {summary.received:,} problems "
        f"({summary.stored:,} uploaded now, {summary.skipped:,} before), started"
    )
    typer.echo(job["id"])
    return int(job["id"])


def _upload(client: Client, job_id: int, problems_file: Path) -> UploadSummary:
    columns = (
        TextColumn("[bold]uploading"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    total = problems_file.stat().st_size
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("upload", total=total)

        def advance(chunk: Chunk) -> None:
            progress.advance(task, len(chunk.body))

        return client.upload(job_id, problems_file, on_chunk=advance)


def status_remote(api_url: str, job_id: int) -> dict[str, Any]:
    """A job's state as `verisolve status` shows it (see cli.jobs.job_status)."""
    with connect(api_url) as client:
        job = client.job(job_id)
    keys = (
        *("id", "name", "status", "generator", "verifier", "strategy", "n_samples"),
        *("n_problems", "n_done", "error", "metrics"),
    )
    state = {k: job[k] for k in keys}
    state["problems"] = {k: v for k, v in job["progress"].items() if v}
    return state


def cancel_remote(api_url: str, job_id: int) -> None:
    """Cancel a job through the service."""
    with connect(api_url) as client:
        job = client.cancel_job(job_id)
    console.print(f"job {job_id}: {job['status']}")


def report_remote(api_url: str, job_id: int) -> EvaluationReport:
    """A finished job's metrics, as the service computed them; exits 1 before it is done."""
    with connect(api_url) as client:
        job = client.job(job_id)
    if job["metrics"] is None:
        fail(
            f"job {job_id} is {job['status']} ({job['n_done']}/{job['n_problems']} done): "
            "metrics come when it is done"
        )
        raise typer.Exit(1)
    return report_from_json(job["metrics"])


def report_from_json(data: dict[str, Any]) -> EvaluationReport:
    """The inverse of EvaluationReport.to_json."""
    calculator = data.get("calculator")
    return EvaluationReport(
        n_problems=data["n_problems"],
        n_candidates=data["n_candidates"],
        n_graded=data["n_graded"],
        k=data["k"],
        seed=data["curve_seed"],
        draws=data["curve_draws"],
        strategies={Strategy(s): v for s, v in data["strategies"].items()},
        test_at_1=data["test_at_1"],
        coverage=data["coverage"],
        pass_at_k={int(k): v for k, v in data["pass_at_k"].items()},
        curves={
            Strategy(s): {int(k): v for k, v in curve.items()}
            for s, curve in data["curves"].items()
        },
        parse_failure_rate=data["parse_failure_rate"],
        calculator=CalculatorStats(**calculator) if calculator else None,
        auroc=data["auroc"],
        ece=data["ece"],
    )
