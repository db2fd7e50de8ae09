"""Tests for `verisolve models`: export tiny real models, list, show, install-default, remove."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobtools import make_job, spec
from verisolve.cli.app import app
from verisolve.cli.database import require_schema
from verisolve.db import get_engine, session_scope
from verisolve.modelstore import registry
from verisolve.modelstore.default import DEFAULT_GENERATOR_NAME
from verisolve.modelstore.manifest import Manifest
from verisolve.modelstore.tiny import build_tiny_model
from verisolve.settings import get_settings
from verisolve.tables import Job, JobStatus

runner = CliRunner()


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh data directory (database and models) for each test."""
    monkeypatch.setenv("VERISOLVE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny Hugging Face models: two generators with different weights and a verifier."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "generator": build_tiny_model(root / "gen"),
        "generator-2": build_tiny_model(root / "gen2", seed=1),
        "verifier": build_tiny_model(root / "ver", head="sequence-classification"),
    }


def _models_cli(*args: str) -> str:
    result = runner.invoke(app, ["models", *args], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def _table_rows(output: str) -> dict[str, list[str]]:
    """The rows of a rich table by their first cell."""
    rows = [[c.strip() for c in line.split("│")] for line in output.splitlines() if "│" in line]
    return {cells[0]: cells for cells in rows if cells and cells[0] not in ("", "name")}


def _registered() -> dict[str, tuple[str, str, str]]:
    with session_scope(get_engine(get_settings().database_url)) as session:
        return {r.name: (r.kind, r.sha256, r.path) for r in registry.list_models(session)}


@pytest.mark.export
def test_export_and_list_a_generator_and_a_verifier(tiny_dirs: dict[str, Path]) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    out = _models_cli("export", str(tiny_dirs["generator"]), "--kind", "generator", "--name", "g")
    assert "Registered generator 'g'" in out
    out = _models_cli(
        "export", str(tiny_dirs["verifier"]), "--kind", "verifier", "--name", "v", "--int8",
        "--score-form", "sequence",
    )  # fmt: skip
    assert "Registered verifier 'v'" in out
    models = get_settings().models_path
    for name, kind in [("g", "generator"), ("v", "verifier")]:
        manifest = Manifest.load(models / name)
        assert (manifest.kind, manifest.name) == (kind, name)
        assert _registered()[name] == (kind, manifest.digest(), str((models / name).resolve()))
    assert Manifest.load(models / "v").int8
    rows = _table_rows(_models_cli("list"))
    for name, kind, int8 in [("g", "generator", "no"), ("v", "verifier", "yes")]:
        assert rows[name][1:3] == [kind, int8]
        assert rows[name][4] == _registered()[name][1][:12]
    assert list(_table_rows(_models_cli("list", "--kind", "verifier"))) == ["v"]
    narrow = runner.invoke(app, ["models", "list"], env={"COLUMNS": "80"}).output
    assert max(len(line) for line in narrow.splitlines()) <= 80
    rows = _table_rows(narrow)
    assert sorted(rows) == ["g", "v"]
    assert all(len(rows[name][5]) == len("2026-11-30") for name in rows)  # dates are whole
    shown = _models_cli("show", "g")
    assert json.loads(shown.split("\n", 1)[1])["name"] == "g"


@pytest.mark.export
def test_export_again_under_the_same_name_replaces_cleanly(tiny_dirs: dict[str, Path]) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    first = ("export", str(tiny_dirs["generator"]), "--kind", "generator", "--name", "g")
    _models_cli(*first)
    sha = _registered()["g"][1]
    assert "unchanged" in _models_cli(*first)
    out = _models_cli(
        "export", str(tiny_dirs["generator-2"]), "--kind", "generator", "--name", "g", "--few-shot"
    )
    new_sha = _registered()["g"][1]
    assert new_sha != sha
    assert f"Replaced the registered 'g' (sha256 {sha[:12]} -> {new_sha[:12]})" in out
    models = get_settings().models_path
    assert Manifest.load(models / "g").digest() == new_sha
    assert Manifest.load(models / "g").prompt.exemplars
    # Nothing half-written or left over beside the model.
    assert sorted(p.name for p in models.iterdir()) == ["g"]
    assert len(_registered()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "generator", "--name", "../escape"], "--name '../escape'"),
        (["--kind", "generator", "--name", "g", "--score-form", "token"], "verifiers only"),
        (["--kind", "verifier", "--name", "v", "--few-shot"], "generators only"),
        (["--kind", "generator", "--name", "g", "--row-scaled"], "with --int8 only"),
        (["--kind", "verifier", "--name", "v", "--int8", "--row-scaled"], "with --int8 only"),
    ],
)
def test_export_refuses_bad_options(
    tiny_dirs: dict[str, Path], args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["models", "export", str(tiny_dirs["generator"]), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert not get_settings().models_path.exists()


def test_export_refuses_a_missing_or_unusable_directory(tmp_path: Path) -> None:
    args = ["--kind", "generator", "--name", "g"]
    result = runner.invoke(app, ["models", "export", str(tmp_path / "nope"), *args])
    assert (result.exit_code, "no such directory" in result.output) == (1, True)
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["models", "export", str(tmp_path / "empty"), *args])
    assert (result.exit_code, "has no config.json" in result.output) == (1, True)


def test_list_when_empty_still_names_the_store() -> None:
    # The README sends users to `models list` for the store's path, registered models or not.
    out = _models_cli("list")
    assert "No models registered" in out
    # (wrapped at the terminal's width: compare without the breaks)
    assert f"Modelstore:{get_settings().models_path.resolve()}" in "".join(out.split())


def test_show_an_unknown_model() -> None:
    result = runner.invoke(app, ["models", "show", "nope"])
    assert result.exit_code == 1
    assert "no model 'nope'" in result.output


def test_install_default_when_installed_only_registers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from verisolve.modelstore import default

    target = get_settings().models_path / DEFAULT_GENERATOR_NAME
    target.mkdir(parents=True)
    (target / "model.onnx").write_bytes(b"onnx")
    (target / "tokenizer.json").write_text("{}")
    manifest = Manifest(
        kind="generator", name=DEFAULT_GENERATOR_NAME, files={"model.onnx": "1" * 64}
    )
    manifest.save(target)

    def must_not_build(*_: object, **__: object) -> None:
        raise AssertionError("an installed default model was built again")

    monkeypatch.setattr(default, "dequantise", must_not_build)
    out = _models_cli("install-default")
    assert "already installed" in out
    assert f"Registered generator '{DEFAULT_GENERATOR_NAME}'" in out
    assert "unchanged" in _models_cli("install-default")
    assert _registered() == {DEFAULT_GENERATOR_NAME: ("generator", manifest.digest(), str(target))}


def _stored_model(root: Path, name: str, kind: str = "generator") -> Path:
    """A model directory with a manifest at `root`/NAME, registered as NAME."""
    target = root / name
    target.mkdir(parents=True)
    (target / "model.onnx").write_bytes(name.encode())
    Manifest(kind=kind, name=name, files={"model.onnx": "1" * 64}).save(target)
    engine = get_engine(get_settings().database_url)
    require_schema(engine)
    with session_scope(engine) as session:
        registry.register(session, Manifest.load(target), target)
    return target


def test_remove_deletes_store_directories_and_only_unregisters_others(tmp_path: Path) -> None:
    store = get_settings().models_path
    stored = _stored_model(store, "g")
    verifier = _stored_model(store, "v", "verifier")
    outside = _stored_model(tmp_path / "elsewhere", "x")
    out = _models_cli("remove", "g", "x", "g")
    assert f"Removed 'g' and deleted {stored.resolve()}" in out
    assert f"Removed 'x' from the registry; its files stay at {outside.resolve()}" in out
    assert not stored.exists()
    assert (outside / "model.onnx").read_bytes() == b"x"
    assert list(_registered()) == ["v"]
    assert sorted(p.name for p in store.iterdir()) == ["v"]  # nothing left over beside it
    out = _models_cli("remove", "--keep-files", "v")
    assert f"its files stay at {verifier.resolve()}" in out
    assert (verifier / "model.onnx").is_file()
    assert _registered() == {}


def test_remove_is_refused_while_an_unfinished_job_uses_the_model() -> None:
    store = get_settings().models_path
    for name in ("g", "v"):
        _stored_model(store, name, "generator" if name == "g" else "verifier")
    engine = get_engine(get_settings().database_url)
    with session_scope(engine) as session:
        job = make_job(session, spec("g", "v", n_samples=2))
        job_id = job.id
    for names in (["g"], ["v"], ["g", "v"]):
        result = runner.invoke(app, ["models", "remove", *names])
        assert result.exit_code == 1
        assert f"used by unfinished job(s) {job_id}" in result.output
        # All or nothing: a directory moved aside for an earlier name is put back.
        assert sorted(p.name for p in store.iterdir()) == ["g", "v"]
        assert sorted(_registered()) == ["g", "v"]
    for status in (JobStatus.RUNNING, JobStatus.DONE):
        with session_scope(engine) as session:
            session.get(Job, job_id).status = status  # type: ignore[union-attr]
        result = runner.invoke(app, ["models", "remove", "g", "v"])
        assert result.exit_code == (1 if status is JobStatus.RUNNING else 0), result.output
    assert _registered() == {}
    assert list(store.iterdir()) == []


def test_remove_an_unknown_model_names_the_known_ones_and_removes_nothing() -> None:
    stored = _stored_model(get_settings().models_path, "g")
    result = runner.invoke(app, ["models", "remove", "g", "nope"])
    assert result.exit_code == 1
    assert "no model 'nope' is registered (known models: g)" in result.output
    assert (stored / "model.onnx").is_file()
    assert list(_registered()) == ["g"]


def test_remove_puts_the_directories_back_when_one_cannot_be_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = get_settings().models_path
    for name in ("a", "b"):
        _stored_model(store, name)
    moved: list[list[str]] = []
    rename = Path.rename

    def fail_on_b(self: Path, target: Path) -> Path:
        moved.append(sorted(p.name for p in store.iterdir()))
        if self.name == "b":
            raise PermissionError(f"{self}: permission denied")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", fail_on_b)
    result = runner.invoke(app, ["models", "remove", "a", "b"])
    assert result.exit_code == 1
    assert "permission denied" in result.output
    assert moved[1][0].startswith(".a.removing-")  # a was out of the way when b failed
    assert sorted(p.name for p in store.iterdir()) == ["a", "b"]
    assert (store / "a" / "model.onnx").read_bytes() == b"a"
    assert sorted(_registered()) == ["a", "b"]


@pytest.mark.export
def test_a_removed_model_is_gone_for_solve(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    _models_cli("export", str(tiny_dirs["generator"]), "--kind", "generator", "--name", "g")
    _models_cli("remove", "g")
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"question": "What is 2 + 3?", "answer": "#### 5"}\n')
    result = runner.invoke(app, ["solve", str(problems), "--generator", "g", "-n", "1"])
    assert result.exit_code == 1
    assert "no model 'g'" in result.output
    assert not (get_settings().models_path / "g").exists()
