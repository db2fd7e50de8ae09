"""One schema rule: only `db upgrade` and the embedded default database ever migrate."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.db import create_engine
from verisolve.db.migrate import current_revision, downgrade, head_revision, upgrade
from verisolve.settings import get_settings

runner = CliRunner()
# Every command that opens the configured database (the job's id need not exist).
COMMANDS = [
    ["status", "1"],
    ["resume", "1"],
    ["cancel", "1"],
    ["report", "1"],
    ["results", "1", "-o", "out.jsonl"],
    ["rescore", "1", "--verifier", "v"],
    ["models", "list"],
    ["keys", "list"],
    ["solve", "problems.jsonl"],
    ["submit", "problems.jsonl"],
]


def revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


@pytest.fixture
def old_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A configured (not embedded) database one revision behind the code."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url)
    downgrade(url, "0002")
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "problems.jsonl").write_text('{"question": "How many?"}\n', encoding="utf-8")
    get_settings.cache_clear()
    return url


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_configured_database_at_an_old_schema_is_refused_and_left_alone(
    old_database: str, command: list[str]
) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.strip().splitlines() == [
        f"the database {create_engine(old_database).url!r} is at revision 0002, "
        f"the code needs {head_revision()}: run `verisolve db upgrade`"
    ]
    assert revision(old_database) == "0002"


def test_db_upgrade_is_what_migrates_it(old_database: str) -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert revision(old_database) == head_revision()
    assert runner.invoke(app, ["models", "list"]).exit_code == 0


def test_the_embedded_default_database_migrates_itself_on_first_use() -> None:
    url = get_settings().database_url
    assert not Path(url.removeprefix("sqlite:///")).exists()
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert revision(url) == head_revision()
