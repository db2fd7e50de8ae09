"""The manifest that sits beside every model's ONNX files (manifest.json)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

ModelKind = Literal["generator", "verifier"]
# Stands for the question while finding where it goes in a rendered prompt.
_QUESTION_MARK = "\ue000"


class PromptSpec(BaseModel):
    """How a question becomes the model's prompt."""

    # The template holds `{exemplars}` and `{question}`; each exemplar is rendered with
    # `exemplar_template` (fields `question` and `solution`) and joined by `separator`.
    template: str = "{exemplars}Question: {question}\nAnswer:"
    exemplar_template: str = "Question: {question}\nAnswer: {solution}\n\n"
    separator: str = ""
    exemplars: list[dict[str, str]] = Field(default_factory=list)
    # Set when the model expects its tokenizer's chat template around the rendered text.
    chat: bool = False

    def render(self, question: str) -> str:
        """The prompt text for one question."""
        shots = self.separator.join(
            self.exemplar_template.format(question=e["question"], solution=e["solution"])
            for e in self.exemplars
        )
        return self.template.format(exemplars=shots, question=question.strip())

    def head(self) -> str:
        """The rendered prompt before its question: the exemplars and the template around them."""
        full = self.render(_QUESTION_MARK)
        return full[: full.index(_QUESTION_MARK)]


class Manifest(BaseModel):
    """What a model directory holds and how to use it."""

    format_version: int = FORMAT_VERSION
    kind: ModelKind
    name: str
    architecture: str = ""
    source: str = ""
    # Relative ONNX file name -> sha256 of its bytes (external data files included).
    files: dict[str, str] = Field(default_factory=dict)
    # Role -> relative ONNX file name: "decoder" (prefill + decode with past), "decoder_prefix"
    # (the prefix-shared decode graph, when exported), "classifier" (verifiers).
    graphs: dict[str, str] = Field(default_factory=dict)
    tokenizer: str = "tokenizer.json"
    int8: bool = False
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    stop: list[str] = Field(default_factory=list)
    eos_token_ids: list[int] = Field(default_factory=list)
    # Verifiers: "sequence" (one score at the last token) or "token" (a value per token).
    score_form: Literal["sequence", "token"] = "sequence"
    # The id that rows are padded with. A sequence-form graph exported from transformers finds
    # each row's last token as the last one that differs from this id (the attention mask plays
    # no part), so inputs must be right-padded with exactly this id.
    pad_token_id: int | None = None
    # The longest input the model takes (its position embeddings); None: no known limit.
    max_length: int | None = None
    # Models trained by `verisolve train`: data, base model, hyperparameters, seed, library
    # versions and the validation metrics of every epoch.
    training: dict[str, Any] | None = None

    @classmethod
    def load(cls, model_dir: Path) -> Manifest:
        """Read the manifest of a model directory."""
        path = model_dir / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{model_dir} has no {MANIFEST_FILE}: not a verisolve model")
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def save(self, model_dir: Path) -> Path:
        """Write the manifest into a model directory."""
        path = model_dir / MANIFEST_FILE
        path.write_text(json.dumps(self.model_dump(), indent=2) + "\n", encoding="utf-8")
        return path

    def digest(self) -> str:
        """One sha256 over every file's digest: the model's identity."""
        joined = "\n".join(f"{name}:{sha}" for name, sha in sorted(self.files.items()))
        return hashlib.sha256(joined.encode()).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
