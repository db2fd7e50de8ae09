"""The contract between the sampling engines and decoder graphs: prefill, expand, step, keep.

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

from verisolve.inference.device_sampling import DeviceLogits


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


class BatchDecoding(Protocol):
    """Rows of many problems decoding together; each row continues its own problem's question."""

    @property
    def rows(self) -> int:
        """How many rows the batch holds."""

    def prefill(self, question_ids: Sequence[int]) -> tuple[NDArray[np.float32], object]:
        """Run a question after the shared prefix: its last logits [vocab] and its cache."""

    def admit(self, prompt: object, count: int) -> None:
        """Append `count` rows continuing a prefilled question (their first token not fed yet)."""

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32] | DeviceLogits:
        """Append one token per row; the next-token logits, float32 [rows, vocab], on the host
        or left on the device for sampling there."""

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep only these rows (indices into the current rows, in their new order)."""


class BatchBackend(Protocol):
    """Something that decodes rows of many problems behind one shared prefix."""

    @property
    def kv_bytes_per_token(self) -> int:
        """Cache bytes one token of one row holds (for the memory budget)."""

    def open(self, shared_ids: Sequence[int]) -> BatchDecoding:
        """An empty batch whose rows all attend to `shared_ids` (computed once, then reused)."""
