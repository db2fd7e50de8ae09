"""`verisolve results JOB -o FILE`: a job's answers or candidates as JSON lines.

From the submission service when `--api URL` or VERISOLVE_API_URL is set, from the configured
database otherwise; the rows are the same either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from verisolve.cli.database import job_or_exit, require_schema
from verisolve.cli.line_errors import err_console, fail
from verisolve.cli.remote import ApiOption, connect
from verisolve.client import Stream
from verisolve.db import get_engine, session_scope
from verisolve.pipeline.job_rows import candidate_rows, ndjson_lines
from verisolve.pipeline.results import answer_rows


def results(
    job_id: Annotated[int, typer.Argument(help="The job's id.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The file to write.")],
    candidates: Annotated[
        bool, typer.Option("--candidates", help="Every candidate instead of one answer each.")
    ] = False,
    api: ApiOption = None,
) -> None:
    """Write one JSON line per problem (its answer), or per candidate with --candidates."""
    what: Stream = "candidates" if candidates else "answers"
    try:
        if api:
            with connect(api) as client:
                count = client.download(job_id, what, output)
                job = client.job(job_id)
            progress = (job["status"], job["n_done"], job["n_problems"])
        else:
            count, progress = _from_database(job_id, candidates, output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    # An answers file has a line per problem, answered or not (see _unfinished).
    noun = "answer lines" if what == "answers" else what
    err_console.print(f"job {job_id}: {count:,} {noun} written to {output}")
    unfinished = _unfinished(job_id, what, *progress)
    if unfinished:
        err_console.print(unfinished)


def _unfinished(job_id: int, what: Stream, status: str, done: int, problems: int) -> str:
    """What a file written before the job ended lacks; empty once every problem is done."""
    if done >= problems:
        return ""
    lacking = (
        'the others\' lines have "status" and no answer'
        if what == "answers"
        else "the others' candidates may be missing or unscored"
    )
    # The status as stored: an inline job stopped by Ctrl-C stays "running" until resumed.
    return f"job {job_id} ({status}): {done:,} of {problems:,} problems done; {lacking}"


def _from_database(job_id: int, candidates: bool, output: Path) -> tuple[int, tuple[str, int, int]]:
    engine = get_engine()
    require_schema(engine)
    partial = output.with_name(output.name + ".partial")
    count = 0
    with session_scope(engine) as session:
        job = job_or_exit(session, job_id)
        rows = candidate_rows(session, job_id) if candidates else answer_rows(session, job)
        with partial.open("wb") as f:
            for line in ndjson_lines(rows):
                f.write(line)
                count += 1
        progress = (str(job.status), job.n_done, job.n_problems)
    partial.replace(output)
    return count, progress
