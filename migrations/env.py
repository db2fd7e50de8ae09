"""Alembic environment: runs the migrations against the URL in the config."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

import verisolve.tables  # noqa: F401  (registers every table on the metadata)
from verisolve.db.base import Base

config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    """Emit SQL without a connection."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run against a live connection; SQLite gets batch mode for ALTERs."""
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = sa.create_engine(
            config.get_main_option("sqlalchemy.url") or "", poolclass=sa.pool.NullPool
        )
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
