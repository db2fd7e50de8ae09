"""The database a command works on, under the one schema rule (see db.migrate.prepare_schema)."""

from __future__ import annotations

import sqlalchemy as sa
import typer

from verisolve.cli.line_errors import fail
from verisolve.db.migrate import SchemaError, prepare_schema


def require_schema(engine: sa.Engine) -> None:
    """Exit 1 with one line unless the database is at the code's schema (the embedded default
    database is migrated here on first use)."""
    try:
        prepare_schema(engine)
    except SchemaError as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
