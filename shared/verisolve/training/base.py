"""The model a training run starts from: a model of the store or a Hugging Face directory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from verisolve.modelstore import registry
from verisolve.modelstore.exemplars import STOP_STRINGS, default_prompt
from verisolve.modelstore.export import HF_SUBDIR
from verisolve.modelstore.manifest import MANIFEST_FILE, Manifest, PromptSpec, sha256_file


class BaseModelError(LookupError):
    """A base model that cannot be trained from; the message says why."""


@dataclass(frozen=True, slots=True)
class BaseModel:
    """A base model's Hugging Face directory, its prompt and stop strings, its weights' sha256."""

    spec: str
    hf_dir: Path
    prompt: PromptSpec
    stop: list[str]
    sha256: str


def weights_sha256(hf_dir: Path) -> str:
    """One sha256 over the sha256 of every weight file (safetensors or bin) of a directory."""
    files = sorted([*hf_dir.glob("*.safetensors"), *hf_dir.glob("*.bin")])
    if not files:
        raise BaseModelError(f"{hf_dir} holds no weights (*.safetensors or *.bin)")
    joined = "\n".join(f"{f.name}:{sha256_file(f)}" for f in files)
    return hashlib.sha256(joined.encode()).hexdigest()


def _store_dir(spec: str) -> Path | None:
    """The store model directory that `spec` names (a path or a registered name), or None."""
    from verisolve.db import get_engine, session_scope
    from verisolve.db.migrate import prepare_schema
    from verisolve.settings import get_settings

    settings = get_settings()
    for candidate in (Path(spec).expanduser(), settings.models_path / spec):
        if (candidate / MANIFEST_FILE).is_file():
            return candidate.resolve()
    engine = get_engine(settings.database_url)
    prepare_schema(engine)
    with session_scope(engine) as session:
        row = registry.get(session, spec)
        return Path(row.path) if row is not None else None


def resolve_base(spec: str, *, shots: int = 0) -> BaseModel:
    """The base model named by `spec`; its own prompt template with `shots` exemplars."""
    path = Path(spec).expanduser()
    if (path / "config.json").is_file():
        if not (path / "tokenizer.json").is_file():
            raise BaseModelError(f"{path} has no tokenizer.json (a fast tokenizer is required)")
        prompt = PromptSpec(exemplars=default_prompt().exemplars[:shots])
        return BaseModel(spec, path.resolve(), prompt, list(STOP_STRINGS), weights_sha256(path))
    store = _store_dir(spec)
    if store is None:
        raise BaseModelError(
            f"unknown base model {spec!r}: not a Hugging Face directory (config.json), a model "
            "directory, nor a registered name (see `verisolve models list`)"
        )
    manifest = Manifest.load(store)
    hf_dir = store / HF_SUBDIR
    if not (hf_dir / "config.json").is_file():
        raise BaseModelError(
            f"model {spec!r} at {store} keeps no Hugging Face weights ({HF_SUBDIR}/): train from "
            "its Hugging Face directory instead"
        )
    prompt = manifest.prompt.model_copy(update={"exemplars": manifest.prompt.exemplars[:shots]})
    stop = list(manifest.stop) or list(STOP_STRINGS)
    return BaseModel(spec, hf_dir, prompt, stop, weights_sha256(hf_dir))
