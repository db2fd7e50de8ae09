"""From trained weights to a registered model: export to ONNX, manifest, install, register.

The export is written inside the run's work directory and moved into the models directory
only when complete, so a failed or interrupted run never leaves a half-written model there,
and the registry row is added after the move.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from verisolve.modelstore.manifest import Manifest
from verisolve.settings import get_settings
from verisolve.training.base import BaseModel
from verisolve.training.loop import LoopConfig, resolve_precision

_LIBRARIES = ("verisolve", "torch", "transformers", "accelerate", "optimum-onnx", "tokenizers")


def library_versions() -> dict[str, str]:
    """Versions of the libraries a run used, and Python's."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(
    kind: str,
    data: dict[str, Any],
    base: BaseModel,
    config: LoopConfig,
    options: dict[str, Any],
    epochs: list[dict[str, Any]],
) -> dict[str, Any]:
    """The manifest's `training` record: data, base, hyperparameters, seed, versions, metrics."""
    from accelerate import PartialState

    hyper = {**asdict(config), **options, "precision": resolve_precision(config.precision)}
    return {
        "kind": kind,
        "data": data,
        "base": {"model": base.spec, "path": str(base.hf_dir), "sha256": base.sha256},
        "hyperparameters": hyper,
        "seed": config.seed,
        "processes": PartialState().num_processes,
        "versions": library_versions(),
        "epochs": epochs,
    }


def install(stage: Path, target: Path) -> None:
    """Move a complete model directory into place, replacing an older one in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
        stage.rename(target)
        shutil.rmtree(old)
    else:
        stage.rename(target)


def register(manifest: Manifest, path: Path) -> None:
    """Record the installed model in the registry of the configured database."""
    from verisolve.db import get_engine, session_scope
    from verisolve.db.migrate import prepare_schema
    from verisolve.modelstore import registry

    engine = get_engine(get_settings().database_url)
    prepare_schema(engine)
    with session_scope(engine) as session:
        registry.register(session, manifest, path)


def _finish(stage: Path, name: str, training: dict[str, Any]) -> Manifest:
    """Add the training record to a staged export, install it and register it."""
    manifest = Manifest.load(stage)
    manifest.training = training
    manifest.save(stage)
    target = get_settings().models_path / name
    install(stage, target)
    register(manifest, target)
    return manifest


def publish_verifier(
    net: Any,
    base: BaseModel,
    name: str,
    training: dict[str, Any],
    options: Any,
    work_dir: Path,
) -> Manifest:
    """Export a trained verifier net as a verifier, install and register it as `name`."""
    from verisolve.modelstore.default import quiet_tools
    from verisolve.modelstore.likelihood_graph import save_likelihood
    from verisolve.modelstore.verifier_export import export_verifier
    from verisolve.training.modeling import save_hf

    hf_dir = save_hf(net.classifier, base.hf_dir, work_dir / "hf")
    if net.likelihood is not None:
        save_likelihood(net.likelihood, net.lm_head, hf_dir)
    stage = work_dir / "export"
    with quiet_tools():
        export_verifier(
            hf_dir,
            stage,
            name=name,
            int8=options.int8,
            score_form=options.score_form,
            source=f"verisolve train verifier from {base.spec}",
            # The scorer renders plain text; a chat template was never part of what it learned.
            prompt=base.prompt.model_copy(update={"chat": False}),
            overwrite=True,
        )
    return _finish(stage, name, training)


def publish_generator(
    model: Any, base: BaseModel, name: str, training: dict[str, Any], int8: bool, work_dir: Path
) -> Manifest:
    """Export a fine-tuned causal LM as a generator (keeping its weights), install, register."""
    from verisolve.modelstore.default import quiet_tools
    from verisolve.modelstore.export import export_generator
    from verisolve.training.modeling import save_hf

    hf_dir = save_hf(model, base.hf_dir, work_dir / "hf")
    stage = work_dir / "export"
    with quiet_tools():
        export_generator(
            hf_dir,
            stage,
            name=name,
            int8=int8,
            prompt=base.prompt,
            stop=base.stop,
            source=f"verisolve train generator from {base.spec}",
            keep_hf=True,
            overwrite=True,
        )
    return _finish(stage, name, training)
