"""Alembic, driven from code: the only way verisolve's schema is created or changed."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from verisolve.db.engine import create_engine, normalize_url
from verisolve.settings import get_settings


def migrations_dir() -> Path:
    """Where the migrations live: the `verisolve_migrations` package (the repo's migrations/)."""
    spec = importlib.util.find_spec("verisolve_migrations")
    if spec is None or spec.origin is None:
        raise RuntimeError("the verisolve_migrations package is not installed")
    return Path(spec.origin).parent


def alembic_config(url: str) -> Config:
    """An Alembic config for a database URL, pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolates '%': escape it in passwords and query strings.
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def _run(url: str, action: Callable[[Config], None]) -> None:
    """Run an Alembic command on one connection of verisolve's own engine."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            action(config)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to `revision`."""
    _run(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str, revision: str) -> None:
    """Revert the migrations down to `revision`."""
    _run(url, lambda config: command.downgrade(config, revision))


def head_revision() -> str | None:
    """The newest revision the code knows."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class SchemaError(RuntimeError):
    """A database not at the code's schema, which this command must not migrate itself."""


def is_embedded(engine: sa.Engine) -> bool:
    """Whether the engine is on the embedded default database (SQLite in the data directory)."""
    settings = get_settings()
    default = normalize_url(f"sqlite:///{settings.data_dir / 'verisolve.db'}")
    return engine.url.render_as_string(hide_password=False) == default


def prepare_schema(engine: sa.Engine) -> None:
    """The one schema rule of every command: migrate the embedded default database on first use;
    refuse any other database that is not at the code's revision (`verisolve db upgrade` is the
    only thing that migrates it, as a deliberate deployment step)."""
    try:
        current = current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise SchemaError(f"cannot reach the database {engine.url!r}: {exc.orig}") from None
    head = head_revision()
    if current == head:
        return
    if is_embedded(engine):
        upgrade(engine.url.render_as_string(hide_password=False))
        return
    at = f"at revision {current}" if current else "empty (no schema)"
    raise SchemaError(
        f"the database {engine.url!r} is {at}, the code needs {head}: run `verisolve db upgrade`"
    )
