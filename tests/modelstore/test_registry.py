"""Tests for the model registry, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest, ModelKind
from verisolve.modelstore.registry import Change, ModelNotFoundError
from verisolve.tables import ModelArtifact


def _manifest(name: str, kind: ModelKind = "generator", weights: str = "a") -> Manifest:
    return Manifest(kind=kind, name=name, files={"model.onnx": weights * 64})


def _model_dir(path: Path, manifest: Manifest) -> Path:
    path.mkdir(parents=True)
    manifest.save(path)
    return path


def _count(session: Session, name: str) -> int:
    query = sa.select(sa.func.count()).where(ModelArtifact.name == name)
    return session.scalar(query) or 0


def test_register_adds_a_row(session: Session, tmp_path: Path) -> None:
    manifest = _manifest("gen")
    done = registry.register(session, manifest, tmp_path / "gen")
    assert done.change is Change.ADDED
    row = registry.get(session, "gen")
    assert row is not None
    assert row is done.artifact
    assert (row.kind, row.sha256, row.path) == (
        "generator",
        manifest.digest(),
        str(tmp_path / "gen"),
    )
    assert Manifest.model_validate(row.manifest) == manifest


@pytest.mark.parametrize(
    ("weights", "path", "change"),
    [
        ("a", "gen", Change.UNCHANGED),
        ("b", "gen", Change.REPLACED),
        ("a", "moved", Change.UPDATED),
    ],
)
def test_register_again_keeps_one_row_and_says_what_changed(
    session: Session, tmp_path: Path, weights: str, path: str, change: Change
) -> None:
    first = _manifest("gen")
    registry.register(session, first, tmp_path / "gen")
    again = _manifest("gen", weights=weights)
    done = registry.register(session, again, tmp_path / path)
    assert done.change is change
    assert done.previous_sha256 == first.digest()
    assert _count(session, "gen") == 1
    row = registry.get(session, "gen")
    assert row is not None
    assert (row.sha256, row.path) == (again.digest(), str(tmp_path / path))


def test_register_survives_a_concurrent_insert_of_the_same_name(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register(session, _manifest("gen"), tmp_path / "gen")
    real_get = registry.get
    calls: list[str] = []

    def late_get(sess: Session, name: str) -> ModelArtifact | None:
        # The first lookup misses, as if another process inserted the row just after it.
        calls.append(name)
        return None if len(calls) == 1 else real_get(sess, name)

    monkeypatch.setattr(registry, "get", late_get)
    done = registry.register(session, _manifest("gen", weights="b"), tmp_path / "gen")
    assert done.change is Change.REPLACED
    assert len(calls) == 2
    assert _count(session, "gen") == 1


def test_list_models_by_name_and_kind(session: Session, tmp_path: Path) -> None:
    kinds: list[tuple[str, ModelKind]] = [
        ("zeta", "generator"),
        ("alpha", "verifier"),
        ("mid", "generator"),
    ]
    for name, kind in kinds:
        registry.register(session, _manifest(name, kind), tmp_path / name)
    assert [r.name for r in registry.list_models(session)] == ["alpha", "mid", "zeta"]
    assert [r.name for r in registry.list_models(session, "generator")] == ["mid", "zeta"]
    assert [r.name for r in registry.list_models(session, "verifier")] == ["alpha"]


def test_resolve_a_directory_without_registering_it(session: Session, tmp_path: Path) -> None:
    path = _model_dir(tmp_path / "somewhere", _manifest("unregistered"))
    assert registry.resolve(session, str(path)) == path.resolve()


def test_resolve_a_registered_name(session: Session, tmp_path: Path) -> None:
    manifest = _manifest("gen")
    path = _model_dir(tmp_path / "gen", manifest)
    registry.register(session, manifest, path)
    assert registry.resolve(session, "gen") == path.resolve()


def test_resolve_a_name_whose_directory_is_gone(session: Session, tmp_path: Path) -> None:
    registry.register(session, _manifest("gone"), tmp_path / "gone")
    with pytest.raises(ModelNotFoundError, match=r"registered, but its directory has no manifest"):
        registry.resolve(session, "gone")


def test_resolve_an_unknown_name_lists_the_known_models(session: Session, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="none registered"):
        registry.resolve(session, "nope")
    for name in ("one", "two"):
        registry.register(session, _manifest(name), tmp_path / name)
    with pytest.raises(ModelNotFoundError, match=r"no model 'nope'.*known models: one, two"):
        registry.resolve(session, "nope")


def test_workers_resolve_registered_names_only(session: Session, tmp_path: Path) -> None:
    manifest = _manifest("gen")
    path = _model_dir(tmp_path / "gen", manifest)
    registry.register(session, manifest, path)
    assert registry.resolve_name(session, "gen") == path.resolve()
    # A model directory on the worker's disk is not a name, registered or not.
    for name in (str(path), "../gen", "~", "", " ", "/etc"):
        with pytest.raises(ModelNotFoundError, match="is registered"):
            registry.resolve_name(session, name)
    with pytest.raises(ModelNotFoundError) as info:
        registry.resolve_name(session, "nope")
    assert "gen" not in str(info.value).replace("'nope'", "")  # no other model is named


@pytest.mark.parametrize("name", ["../up", "a/b", "", ".hidden", "-x", "sp ace"])
def test_a_manifest_name_must_be_a_name(session: Session, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a model name"):
        registry.register(session, _manifest(name), tmp_path / "m")
