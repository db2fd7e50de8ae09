"""Where a few-shot prompt splits into the part every problem shares and the question's part.

Rows of every problem attend to one cache of the shared part, so its tokens must be exactly the
first tokens of every full prompt. The split is made at a template boundary (the end of the text
before the question, trailing whitespace left to the question) and checked on probe questions
of every kind; when no boundary tokenizes cleanly, nothing is shared.
"""

from __future__ import annotations

from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.manifest import PromptSpec

# Questions that start with a letter, a digit, punctuation, a quote, a sign, non-ASCII text.
PROBES = ("What is 2+2?", "7 apples", "(a) pick one", "'Five' boxes", "-3 degrees", "¿Cuántos?")


def shared_prefix_ids(tokenizer: TextTokenizer, prompt: PromptSpec) -> list[int]:
    """The token ids every prompt of this spec starts with (special tokens included)."""
    head = prompt.head()
    candidates = [head.rstrip()]
    # The exemplars alone, cut before the whitespace that separates them from the rest.
    last_break = head.rstrip().rfind("\n")
    if last_break > 0:
        candidates.append(head[:last_break].rstrip())
    fulls = [tokenizer.encode(prompt.render(q)) for q in PROBES]
    for text in candidates:
        if not text:
            continue
        ids = tokenizer.encode(text)
        if all(len(f) > len(ids) and f[: len(ids)] == ids for f in fulls):
            return ids
    return []
