"""Turning questions and solutions into token rows exactly as inference will see them."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from verisolve.inference.verifier import solution_start, verifier_text
from verisolve.modelstore.manifest import PromptSpec
from verisolve.training.batching import Example


def load_tokenizer(hf_dir: Path) -> Tokenizer:
    """The fast tokenizer of a Hugging Face directory, without padding or truncation."""
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def verifier_example(
    tokenizer: Tokenizer,
    prompt: PromptSpec,
    question: str,
    completion: str,
    *,
    label: float,
    group: int,
    max_length: int | None,
) -> Example:
    """The text the ONNX verifier scores, with its solution's first token found by offsets."""
    text = verifier_text(prompt, question, completion)
    prefix_chars = len(prompt.render(question))
    encoding = tokenizer.encode(text)
    ids, offsets = list(encoding.ids), list(encoding.offsets)
    if max_length and len(ids) > max_length:
        # As the scorer does: the question's start goes first, the solution's end stays.
        ids, offsets = ids[-max_length:], offsets[-max_length:]
    start = solution_start(offsets, prefix_chars)
    return Example(tuple(ids), min(start, len(ids) - 1), label, group)


def generator_example(
    tokenizer: Tokenizer,
    prompt: PromptSpec,
    question: str,
    answer: str,
    *,
    eos_id: int,
    max_length: int | None,
) -> Example:
    """Prompt ids as the engine encodes them, then the answer's ids and EOS (the targets)."""
    prompt_ids = tokenizer.encode(prompt.render(question)).ids
    rendered = prompt.render(question)
    sep = "" if not rendered or rendered[-1].isspace() else " "
    answer_ids = tokenizer.encode(sep + answer.strip(), add_special_tokens=False).ids
    ids = [*prompt_ids, *answer_ids, eos_id]
    if max_length and len(ids) > max_length:
        ids = ids[:max_length]
    return Example(tuple(ids), min(len(prompt_ids), len(ids) - 1))
