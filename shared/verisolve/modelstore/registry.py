"""The model registry: model directories known to the database, by unique name.

Functions take a session and flush; the caller's session scope commits.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from verisolve.modelstore.manifest import MANIFEST_FILE, Manifest
from verisolve.tables import Job, JobStatus, ModelArtifact

logger = logging.getLogger(__name__)


NAME_RULE = "letters, digits and . _ - +, not starting with . or -"


class ModelNotFoundError(LookupError):
    """Neither a model directory nor a registered name."""


def is_model_name(name: str) -> bool:
    """Whether `name` is a model name: no path, no blank, nothing a file system would resolve."""
    if not name or len(name) > 256 or name[0] in ".-":
        return False
    return all(c.isascii() and (c.isalnum() or c in "._-+") for c in name)


class ModelInUseError(RuntimeError):
    """A model that an unfinished job still needs."""


class Change(enum.StrEnum):
    """What register() did to the registry."""

    ADDED = "added"
    REPLACED = "replaced"  # same name, other weights
    UPDATED = "updated"  # same weights, other path or manifest
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Registration:
    """The registered row, what changed, and the weights it replaced (if any)."""

    artifact: ModelArtifact
    change: Change
    previous_sha256: str | None = None


def register(session: Session, manifest: Manifest, path: Path) -> Registration:
    """Add the model at `path`, or replace the row that holds its name."""
    if not is_model_name(manifest.name):
        raise ValueError(f"{manifest.name!r} is not a model name ({NAME_RULE})")
    fields: dict[str, object] = {
        "kind": manifest.kind,
        "path": str(path.resolve()),
        "sha256": manifest.digest(),
        "manifest": manifest.model_dump(mode="json"),
    }
    row = get(session, manifest.name)
    if row is None:
        try:
            # A savepoint, so a concurrent insert of the same name does not end our transaction.
            with session.begin_nested():
                row = ModelArtifact(name=manifest.name, **fields)
                session.add(row)
            logger.info("registered %s %s at %s", manifest.kind, manifest.name, path)
            return Registration(row, Change.ADDED)
        except IntegrityError:
            row = get(session, manifest.name)
            if row is None:
                raise
    return _update(session, row, fields)


def _update(session: Session, row: ModelArtifact, fields: dict[str, object]) -> Registration:
    """Bring an existing row to `fields` and say what changed."""
    previous = row.sha256
    if all(getattr(row, key) == value for key, value in fields.items()):
        return Registration(row, Change.UNCHANGED, previous)
    change = Change.REPLACED if fields["sha256"] != previous else Change.UPDATED
    for key, value in fields.items():
        setattr(row, key, value)
    session.flush()
    if change is Change.REPLACED:
        logger.warning(
            "model %s replaced: sha256 %s -> %s", row.name, previous[:12], row.sha256[:12]
        )
    return Registration(row, change, previous)


def placeholder(name: str, kind: str = "generator") -> ModelArtifact:
    """A registry row for a benchmark's job that is never run: no model files behind it."""
    return ModelArtifact(kind=kind, name=name, path="", sha256="0" * 64, manifest={})


def get(session: Session, name: str) -> ModelArtifact | None:
    """The registered model called `name`, or None."""
    return session.scalars(sa.select(ModelArtifact).where(ModelArtifact.name == name)).one_or_none()


def list_models(session: Session, kind: str | None = None) -> list[ModelArtifact]:
    """Registered models by name, optionally of one kind."""
    query = sa.select(ModelArtifact).order_by(ModelArtifact.name)
    if kind is not None:
        query = query.where(ModelArtifact.kind == kind)
    return list(session.scalars(query))


def unfinished_jobs_using(session: Session, name: str) -> list[int]:
    """Ids of the jobs not yet done, cancelled or failed whose generator or verifier is `name`."""
    unfinished = (JobStatus.PENDING, JobStatus.RUNNING)
    query = (
        sa.select(Job.id)
        .where(Job.status.in_(unfinished), sa.or_(Job.generator == name, Job.verifier == name))
        .order_by(Job.id)
    )
    return list(session.scalars(query))


def unregister(session: Session, names: Iterable[str]) -> list[ModelArtifact]:
    """Delete the registry rows of `names` (their files are the caller's): all, or none.

    Refused when a name is not registered, or while an unfinished job uses the model: finished
    jobs keep the name they were solved with, but an unfinished one would fail when a worker looked
    the model up.
    """
    rows = []
    for name in dict.fromkeys(names):
        row = get(session, name)
        if row is None:
            raise ModelNotFoundError(
                f"no model {name!r} is registered (known models: {_known(session)})"
            )
        jobs = unfinished_jobs_using(session, name)
        if jobs:
            ids = ", ".join(str(job) for job in jobs)
            raise ModelInUseError(
                f"model {name!r} is used by unfinished job(s) {ids}; let them finish or cancel "
                "them (`verisolve cancel ID`) first"
            )
        rows.append(row)
    for row in rows:
        session.delete(row)
        logger.info("unregistered %s %s (was at %s)", row.kind, row.name, row.path)
    session.flush()
    return rows


def resolve_name(session: Session, name: str) -> Path:
    """The directory of a registered model: names only, never a path (what workers load)."""
    row = get(session, name) if is_model_name(name) else None
    if row is None:
        raise ModelNotFoundError(f"no model {name!r} is registered")
    path = Path(row.path)
    if not (path / MANIFEST_FILE).is_file():
        raise ModelNotFoundError(
            f"model {name!r} is registered, but its directory has no {MANIFEST_FILE}; "
            "export or install it again"
        )
    return path


def resolve(session: Session, name_or_path: str) -> Path:
    """A model directory for local tools: `name_or_path` when it holds a manifest, else a name."""
    candidate = Path(name_or_path).expanduser()
    if (candidate / MANIFEST_FILE).is_file():
        return candidate.resolve()
    if get(session, name_or_path) is not None:
        return resolve_name(session, name_or_path)
    raise ModelNotFoundError(
        f"no model {name_or_path!r}: not a directory with a {MANIFEST_FILE}, nor a registered "
        f"name (known models: {_known(session)}; see `verisolve models list`)"
    )


def _known(session: Session) -> str:
    """The registered names, for an error message."""
    return ", ".join(row.name for row in list_models(session)) or "none registered"
