"""A generator's tokenizer (Hugging Face `tokenizers`, no transformers) and per-token masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

# What a piece shows when its token holds only part of a multi-byte character.
REPLACEMENT_CHAR = "\ufffd"


class TextTokenizer:
    """Encoding prompts and continuations, decoding rows, and which tokens show which chars."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self._pieces: list[str] | None = None

    @classmethod
    def from_file(cls, path: Path) -> TextTokenizer:
        """Load a tokenizer.json."""
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str, *, special_tokens: bool = True) -> list[int]:
        """Token ids of a prompt, with the tokenizer's special tokens (a BOS, say) by default."""
        ids: list[int] = self._tok.encode(text, add_special_tokens=special_tokens).ids
        return ids

    def encode_continuation(self, text: str, after: str) -> list[int]:
        """Token ids of `text` written right after `after` (no BOS, no word-start space)."""
        # Tokenizers that mark a word start ("▁12") would add one to text encoded alone;
        # encoding it behind the last character of `after` and dropping that prefix avoids it.
        anchor = after[-1:] or " "
        head = self.encode(anchor, special_tokens=False)
        both = self.encode(anchor + text, special_tokens=False)
        if both[: len(head)] == head and self.decode(both[len(head) :]) == text:
            return both[len(head) :]
        return self.encode(text, special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a row of generated ids, special tokens skipped."""
        text: str = self._tok.decode(list(ids), skip_special_tokens=True)
        return text

    def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
        """Texts of several rows at once (the Rust side decodes them in parallel)."""
        texts: list[str] = self._tok.decode_batch([list(r) for r in rows], skip_special_tokens=True)
        return texts

    def pieces(self) -> list[str]:
        """Each token's text on its own (cached): what a mask over the vocabulary looks at."""
        if self._pieces is None:
            ids = [[i] for i in range(self.vocab_size)]
            self._pieces = self._tok.decode_batch(ids, skip_special_tokens=False)
        return self._pieces

    def char_mask(self, chars: str, size: int) -> NDArray[np.bool_]:
        """Over ids 0..size-1: whether a token's text may show one of `chars`.

        A token that holds part of a multi-byte character counts too, since its character
        appears only once the next token completes it.
        """
        wanted = set(chars) | {REPLACEMENT_CHAR}
        mask = np.zeros(size, dtype=np.bool_)
        for i, piece in enumerate(self.pieces()[:size]):
            if not wanted.isdisjoint(piece):
                mask[i] = True
        return mask
