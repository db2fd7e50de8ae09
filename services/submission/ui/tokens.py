"""Where a candidate's tokens lie in its text, so each can be shaded by the verifier's value.

A token-level verifier stores one value per token it scored (`candidates.token_scores`). The text
it scored is the verifier's prompt for the question followed by the completion
(verisolve.inference.verifier.verifier_text), so the completion's tokens are found again by
encoding that text with the verifier's own tokenizer, from the model registry, and reading each
token's character offsets. The values line up either with every scored token (prompt included)
or with the completion's tokens only; anything else is reported, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from tokenizers import Tokenizer

from verisolve.inference.verifier import verifier_text
from verisolve.modelstore import registry
from verisolve.modelstore.manifest import Manifest


@dataclass(frozen=True)
class TokenSpan:
    """A token's characters in the completion, [start, end), and the verifier's value there."""

    start: int
    end: int
    value: float


@dataclass(frozen=True)
class Shading:
    """A candidate's token spans, or why there are none (a note for the reader)."""

    spans: tuple[TokenSpan, ...] = ()
    note: str | None = None


@dataclass(frozen=True)
class VerifierTokenizer:
    """A verifier's tokenizer and prompt, as its scorer encodes texts."""

    manifest: Manifest
    tokenizer: Tokenizer


@lru_cache(maxsize=8)
def _load(model_dir: str) -> VerifierTokenizer:
    manifest = Manifest.load(Path(model_dir))
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / manifest.tokenizer))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if manifest.max_length:
        tokenizer.enable_truncation(manifest.max_length, direction="left")
    return VerifierTokenizer(manifest, tokenizer)


def verifier_tokenizer(session: Session, name: str) -> VerifierTokenizer | str:
    """The named verifier's tokenizer (cached), or a note saying why it is unavailable."""
    try:
        model_dir = registry.resolve(session, name)
        return _load(str(model_dir))
    except Exception as exc:  # tokenizers raises bare Exception; any failure means no shading
        return f"the verifier's tokenizer ({name}) is not available here: {exc}"


def shade(
    tok: VerifierTokenizer | str, question: str, completion: str, values: list[Any]
) -> Shading:
    """The completion's tokens with their values, or a note when they cannot be aligned."""
    if isinstance(tok, str):
        return Shading(note=tok)
    full = verifier_text(tok.manifest.prompt, question, completion)
    body = completion.lstrip()
    base = len(full) - len(body)  # where the completion's first kept character lies
    lead = len(completion) - len(body)
    encoding = tok.tokenizer.encode(full)
    spans: list[tuple[int, int, int]] = []  # (index among scored tokens, start, end)
    for index, (start, end) in enumerate(encoding.offsets):
        if end > base and end > start and encoding.special_tokens_mask[index] == 0:
            spans.append((index, max(start, base) - base + lead, end - base + lead))
    if len(values) == len(encoding.ids):
        chosen = [TokenSpan(s, e, float(values[i])) for i, s, e in spans]
    elif len(values) == len(spans):
        chosen = [TokenSpan(s, e, float(v)) for (_, s, e), v in zip(spans, values, strict=True)]
    else:
        return Shading(
            note=f"{len(values)} stored token values do not match the {len(spans)} solution "
            f"tokens the verifier's tokenizer finds; the text is shown unshaded"
        )
    return Shading(spans=tuple(chosen))
