"""Databases of a test module's own (these tests commit), and the pipeline's model doubles."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbtools import fresh_postgres_database
from verisolve.db import create_engine
from verisolve.db.migrate import upgrade

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))


@pytest.fixture(scope="module")
def private_postgres_url(postgres_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database for this module alone, dropped afterwards."""
    with fresh_postgres_database(postgres_url) as url:
        yield url


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def own_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    """An engine on a migrated database of this module's own, SQLite and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('own') / 'own.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("private_postgres_url")
    engine = create_engine(url)
    yield engine
    engine.dispose()
