"""The contract between the sampling engine and a decoder graph: prefill, expand, step, keep.

The engine never sees a cache layout. A backend prefills the prompt once (batch 1), then
`expand` makes N rows that share it, `step` feeds one token per live row and returns the next
logits, and `keep` drops finished rows. Optimum's decoder graph (`onnx_decoder.py`) is one
backend; a graph whose rows share the prompt's cache can be another; `scripted.py` is the test
double.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


class Decoding(Protocol):
    """One problem's decoding state: the prompt's cache, then one row per live sample."""

    def expand(self, n: int) -> None:
        """Turn the prefilled prompt (one row) into `n` rows that continue it."""

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """Append one token per row; the next-token logits, float32 [rows, vocab]."""

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep only these rows (indices into the current rows, in their new order)."""


class DecoderBackend(Protocol):
    """Something that can start a decoding from a prompt."""

    def prefill(self, prompt_ids: Sequence[int]) -> tuple[NDArray[np.float32], Decoding]:
        """Run the prompt once: the last position's logits [vocab] and the decoding state."""
