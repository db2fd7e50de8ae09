"""Test databases made on demand (a plain module: conftest files import it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from verisolve.db import create_engine
from verisolve.db.migrate import upgrade


@contextmanager
def fresh_postgres_database(server_url: str, *, migrate: bool = True) -> Iterator[str]:
    """A new database on the server of `server_url`, migrated unless not asked; dropped on exit."""
    admin = create_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"verisolve_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
