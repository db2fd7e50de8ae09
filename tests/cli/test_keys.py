"""`verisolve keys create | list | revoke` against the configured database."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from verisolve.apikeys import authenticate
from verisolve.cli.app import app
from verisolve.db import get_engine, session_scope
from verisolve.db.migrate import upgrade

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade(url)
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", url)
    return get_engine(url)


def test_create_prints_the_key_once_and_list_never_shows_it(db: sa.Engine) -> None:
    created = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--name", "ci"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("vs_")
    assert "tenant 'acme'" in created.stderr
    with session_scope(db) as session:
        key = authenticate(session, token)
        assert key is not None
        assert key.tenant == "acme"
    listed = runner.invoke(app, ["keys", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "acme" in listed.stdout
    assert token[:11] in listed.stdout
    assert token not in listed.stdout


def test_revoke_stops_a_key(db: sa.Engine) -> None:
    token = runner.invoke(app, ["keys", "create", "--tenant", "acme"]).stdout.strip()
    with session_scope(db) as session:
        key = authenticate(session, token)
        assert key is not None
        key_id = key.id
    revoked = runner.invoke(app, ["keys", "revoke", str(key_id)])
    assert revoked.exit_code == 0, revoked.output
    with session_scope(db) as session:
        assert authenticate(session, token) is None
    unknown = runner.invoke(app, ["keys", "revoke", "999"])
    assert unknown.exit_code == 1
    assert "no API key with id 999" in unknown.stderr


def test_an_empty_tenant_is_refused(db: sa.Engine) -> None:
    result = runner.invoke(app, ["keys", "create", "--tenant", " "])
    assert result.exit_code == 1
    assert "tenant name is empty" in result.stderr
