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


def ensure_schema(engine: sa.Engine) -> None:
    """Bring a database to the newest revision, unless it is there already."""
    if current_revision(engine) != head_revision():
        upgrade(engine.url.render_as_string(hide_password=False))
