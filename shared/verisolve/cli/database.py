"""The database a command works on (one schema rule: db.migrate.prepare_schema), and its jobs."""

from __future__ import annotations

import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session

from verisolve.cli.line_errors import fail
from verisolve.db.migrate import SchemaError, prepare_schema
from verisolve.pipeline.jobs import JobNotFound, get_job
from verisolve.tables import Job


def require_schema(engine: sa.Engine) -> None:
    """Exit 1 with one line unless the database is at the code's schema (the embedded default
    database is migrated here on first use)."""
    try:
        prepare_schema(engine)
    except SchemaError as exc:
        fail(str(exc))
        raise typer.Exit(1) from None


def job_or_exit(session: Session, job_id: int) -> Job:
    """The job; exit 1 with the lifecycle's one line ("no job N") when there is none."""
    try:
        return get_job(session, job_id)
    except JobNotFound as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
