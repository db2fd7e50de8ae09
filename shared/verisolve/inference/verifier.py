"""Verifier scoring on ONNX Runtime: the probability that each candidate solution is correct.

The text scored is the manifest's prompt for the question followed by the completion (see
`verifier_text`), encoded with the model's tokenizer and its special tokens. A score is the sigmoid
of the model's one logit at the candidate's final token: the sequence form gives that logit only;
the token form gives one after every token, all kept in `token_values`, the last one selecting.

Candidates are sorted by token length and cut into batches of at most `max_batch_size` rows and
`max_batch_tokens` padded tokens; scores come back in input order. Rows are right-padded with the
manifest's pad id: under causal attention a real token never sees the padding after it, and the
sequence-form graph exported from transformers reads each row at its last token that differs from
that id. A text longer than the model's limit loses tokens from the left, so the question's start
goes first and the completion's end, where the score is read, is always kept.

A graph that also reads the solution's likelihood (`train verifier --likelihood-features`) takes
a `solution_mask` input as well: 1 from the completion's first token on, found by the tokens'
character offsets against the rendered prompt's length, as training finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from verisolve.inference.providers import create_session
from verisolve.modelstore.manifest import Manifest, PromptSpec

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 32
# The likelihood-reading graph's extra input (see verisolve.modelstore.likelihood_graph).
SOLUTION_MASK = "solution_mask"
DEFAULT_MAX_BATCH_TOKENS = 16384


@dataclass(frozen=True, slots=True)
class VerifierScore:
    """One candidate's score: P(correct) read at its final token."""

    score: float
    n_tokens: int
    truncated: bool = False
    # Token form only: the value after every scored token; the last one is `score`.
    token_values: tuple[float, ...] | None = None


def verifier_text(prompt: PromptSpec, question: str, completion: str) -> str:
    """The rendered prompt, then the completion, with one space between unless one is there."""
    rendered = prompt.render(question)
    body = completion.lstrip()
    if not rendered or rendered[-1].isspace():
        return rendered + body
    return f"{rendered} {body}"


def solution_start(offsets: Sequence[tuple[int, int]], prefix_chars: int) -> int:
    """Index of the first token that ends past the prompt's characters (the solution's first)."""
    return next(
        (i for i, (_, end) in enumerate(offsets) if end > prefix_chars and end > 0),
        len(offsets),
    )


def plan_batches(
    lengths: Sequence[int], max_batch_size: int, max_batch_tokens: int
) -> list[list[int]]:
    """Indices grouped longest first, each group within the row and padded-token limits."""
    if max_batch_size < 1 or max_batch_tokens < 1:
        raise ValueError("max_batch_size and max_batch_tokens must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        batch = batches[-1] if batches else None
        # Sorted longest first, so a group's padded width is the length of its first member.
        if (
            batch is not None
            and len(batch) < max_batch_size
            and (len(batch) + 1) * lengths[batch[0]] <= max_batch_tokens
        ):
            batch.append(index)
        else:
            batches.append([index])
    return batches


def sigmoid(logits: NDArray[Any]) -> NDArray[np.float64]:
    """The logistic function, without overflow for large logits of either sign."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))


class Verifier:
    """A verifier model directory loaded into ONNX Runtime."""

    def __init__(
        self,
        session: Any,
        tokenizer: Tokenizer,
        manifest: Manifest,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_length: int | None = None,
    ) -> None:
        _check_manifest(manifest)
        self.manifest = manifest
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self._session = session
        self._input_names = {i.name for i in session.get_inputs()}
        self._output = session.get_outputs()[0].name
        _check_output_rank(len(session.get_outputs()[0].shape), manifest.score_form)
        self._pad_id = manifest.pad_token_id if manifest.pad_token_id is not None else 0
        self._tokenizer = tokenizer
        # Padding is ours to do; the file may carry its own padding and truncation settings.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.max_length = max_length or manifest.max_length
        if self.max_length:
            tokenizer.enable_truncation(self.max_length, direction="left")

    @classmethod
    def load(
        cls,
        model_dir: Path,
        provider: str = "cpu",
        *,
        threads: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_length: int | None = None,
    ) -> Verifier:
        """Load a verifier directory on `provider` ("cpu" or "cuda"; no silent CPU fallback)."""
        model_dir = Path(model_dir)
        manifest = Manifest.load(model_dir)
        _check_manifest(manifest)
        session = create_session(
            model_dir / manifest.graphs["classifier"], provider, threads=threads
        )
        tokenizer = Tokenizer.from_file(str(model_dir / manifest.tokenizer))
        return cls(
            session,
            tokenizer,
            manifest,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
            max_length=max_length,
        )

    def score(self, question: str, completions: Sequence[str]) -> list[VerifierScore]:
        """Scores of one question's candidate completions, in their order."""
        prompt = self.manifest.prompt
        texts = [verifier_text(prompt, question, c) for c in completions]
        return self.score_texts(texts, [len(prompt.render(question))] * len(texts))

    @property
    def needs_prefixes(self) -> bool:
        """Whether the graph reads where each solution starts (a likelihood-reading graph)."""
        return SOLUTION_MASK in self._input_names

    def score_texts(
        self, texts: Sequence[str], prefix_chars: Sequence[int] | None = None
    ) -> list[VerifierScore]:
        """Scores of whole texts (prompt and completion already joined), in their order.

        `prefix_chars`: per text, the length of its rendered prompt; needed by a graph that
        reads the solution's likelihood (`needs_prefixes`), ignored otherwise.
        """
        if self.needs_prefixes and prefix_chars is None:
            raise ValueError(
                f"verifier {self.manifest.name!r} reads the solution's likelihood: "
                "give each text's prompt length (prefix_chars)"
            )
        if prefix_chars is not None and len(prefix_chars) != len(texts):
            raise ValueError(f"{len(prefix_chars)} prompt lengths for {len(texts)} texts")
        encodings = self._tokenizer.encode_batch(list(texts)) if texts else []
        rows: list[list[int]] = [e.ids for e in encodings]
        for position, row in enumerate(rows):
            if not row:
                raise ValueError(f"text {position} encodes to no tokens: nothing to score")
        starts = (
            [solution_start(e.offsets, n) for e, n in zip(encodings, prefix_chars, strict=True)]
            if self.needs_prefixes and prefix_chars is not None
            else None
        )
        scores: list[VerifierScore | None] = [None] * len(rows)
        lengths = [len(r) for r in rows]
        for batch in plan_batches(lengths, self.max_batch_size, self.max_batch_tokens):
            batch_starts = [starts[i] for i in batch] if starts is not None else None
            values = self._run([rows[i] for i in batch], batch_starts)
            for index, row_values in zip(batch, values, strict=True):
                scores[index] = VerifierScore(
                    score=float(row_values[-1]),
                    n_tokens=lengths[index],
                    truncated=bool(encodings[index].overflowing),
                    token_values=(
                        tuple(float(v) for v in row_values)
                        if self.manifest.score_form == "token"
                        else None
                    ),
                )
        return [s for s in scores if s is not None]

    def _run(
        self, rows: list[list[int]], starts: list[int] | None = None
    ) -> list[NDArray[np.float64]]:
        """One right-padded batch through the graph: per row, the probabilities it yields."""
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if starts is not None:
            solution = np.zeros_like(mask)
            for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
                solution[i, start : len(row)] = 1
            feeds[SOLUTION_MASK] = solution
        if "position_ids" in self._input_names:
            feeds["position_ids"] = np.tile(np.arange(width, dtype=np.int64), (len(rows), 1))
        (logits,) = self._session.run([self._output], feeds)
        probs = sigmoid(logits)
        if self.manifest.score_form == "sequence":
            return [probs[i, :1] for i in range(len(rows))]
        return [probs[i, : len(row), 0] for i, row in enumerate(rows)]


def _check_manifest(manifest: Manifest) -> None:
    """Refuse a manifest this scorer cannot use, naming the field."""
    if manifest.kind != "verifier":
        raise ValueError(f"model {manifest.name!r} is a {manifest.kind}, not a verifier")
    if "classifier" not in manifest.graphs:
        raise ValueError(f"model {manifest.name!r}: manifest graphs has no 'classifier' entry")
    if manifest.score_form == "sequence" and manifest.pad_token_id is None:
        raise ValueError(
            f"model {manifest.name!r}: a sequence-form verifier needs pad_token_id in its manifest"
        )
    if manifest.prompt.chat:
        raise ValueError(f"model {manifest.name!r}: chat prompts are not supported for verifiers")


def _check_output_rank(rank: int, score_form: str) -> None:
    """The graph's logits must match the score form: (batch, 1) or (batch, tokens, 1)."""
    expected = {"sequence": 2, "token": 3}[score_form]
    if rank != expected:
        raise ValueError(
            f"the classifier graph's logits have rank {rank}, but score_form {score_form!r} "
            f"needs rank {expected}"
        )
