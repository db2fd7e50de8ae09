"""Shared fixtures: migrated databases (SQLite always, PostgreSQL when reachable), services."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dbtools import fresh_postgres_database
from verisolve.db import create_engine
from verisolve.db.migrate import upgrade
from verisolve.settings import get_settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_ADMIN_URL = os.environ.get(
    "VERISOLVE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
RABBITMQ_URL = os.environ.get("VERISOLVE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


# Settings a test run takes from the user's environment (the rest are the defaults).
_KEPT_SETTINGS = frozenset({"VERISOLVE_GSM8K_DIR"})
# The user's model store as the shell configures it, read before any test changes the settings:
# tests of the installed default model read it there, and nothing writes to it.
USER_MODELS_PATH = get_settings().models_path
get_settings.cache_clear()


def service_unavailable(what: str, why: object) -> None:
    """Skip a test that needs a service, or fail it under CI=true, where skipping hides a gap."""
    message = f"{what} is not reachable: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: services must be up)")
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _isolated_settings(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every test gets its own data directory and default settings, whatever the user's shell
    exports, so nothing touches the user's database or models and no setting skews a test.

    The GSM8K location (read, never written) and the tests' own service URLs are kept.
    """
    for name in list(os.environ):
        own = name in _KEPT_SETTINGS or name.startswith("VERISOLVE_TEST_")
        if name.startswith("VERISOLVE_") and not own:
            monkeypatch.delenv(name)
    monkeypatch.setenv("VERISOLVE_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def user_models_path() -> Path:
    """The user's model store (VERISOLVE_MODEL_DIR, else the data directory's): read only."""
    return USER_MODELS_PATH


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """The GSM8K folder (VERISOLVE_GSM8K_DIR); tests that read it skip when it is absent."""
    folder = get_settings().gsm8k_dir.resolve()
    if not (folder / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found at {folder} (set VERISOLVE_GSM8K_DIR)")
    return folder


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database file for the session."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for the session, dropped at the end."""
    probe = create_engine(POSTGRES_ADMIN_URL)
    try:
        with probe.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        service_unavailable("PostgreSQL", exc.orig)
    finally:
        probe.dispose()
    with fresh_postgres_database(POSTGRES_ADMIN_URL) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database URL: every test using it runs on SQLite and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on the test database."""
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: sa.Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        with Session(bind=connection, join_transaction_mode="create_savepoint") as sess:
            yield sess
        transaction.rollback()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """RabbitMQ's URL, once it answers."""
    if not port_open("127.0.0.1", 5672):
        service_unavailable("RabbitMQ", "nothing listens on 127.0.0.1:5672")
    return RABBITMQ_URL
