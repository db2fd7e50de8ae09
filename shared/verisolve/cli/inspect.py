"""`verisolve inspect`: the job inspector on the local database, in a web browser."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from verisolve.cli.database import require_schema
from verisolve.cli.line_errors import fail
from verisolve.cli.reporting import console
from verisolve.db import get_engine, session_scope
from verisolve.pipeline.jobs import JobSpec
from verisolve.tables import Job

LOCAL_TENANT = JobSpec.owner  # the owner of every job `verisolve solve` makes


def inspect_app(job_id: int | None) -> tuple[Any, str]:
    """The submission service's app in local mode, and the path of the first page to open."""
    from services.submission.api import create_app

    engine = get_engine()
    require_schema(engine)
    if job_id is not None:
        with session_scope(engine) as session:
            job = session.get(Job, job_id)
            if job is None or job.owner != LOCAL_TENANT:
                fail(f"no job {job_id} of the local tenant in {engine.url.render_as_string()}")
                raise typer.Exit(1)
    path = "/ui/jobs" if job_id is None else f"/ui/jobs/{job_id}"
    return create_app(engine, ui_local_tenant=LOCAL_TENANT), path


def inspect(
    job: Annotated[int | None, typer.Argument(help="Open this job's page first.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
) -> None:
    """Browse jobs, answers and candidates of the local database (no API key needed)."""
    import uvicorn

    app, path = inspect_app(job)
    console.print(f"Inspector at http://{host}:{port}{path}  (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
