"""The migrations are the schema: they build it, agree with the models, and go both ways."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import verisolve.tables  # noqa: F401
from verisolve.db import Base
from verisolve.db.migrate import current_revision, downgrade, head_revision, upgrade


def test_models_and_migrations_agree(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_database_is_at_head(engine: sa.Engine) -> None:
    assert current_revision(engine) == head_revision()


def test_every_table_is_created(engine: sa.Engine) -> None:
    names = set(sa.inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= names


def test_downgrade_to_base_and_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    upgrade(url)
    downgrade(url, "base")
    engine = sa.create_engine(url)
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()
