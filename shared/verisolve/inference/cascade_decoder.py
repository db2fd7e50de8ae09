"""The batch backend over the cascade graph (see modelstore/cascade_export.py).

The few-shot exemplars are prefilled once per backend (so once per worker and model) with
optimum's graph; their cache, at batch 1, is the prefix every row of every problem attends to. A
problem's prefill covers only its question, with the exemplars as past. Each row's own cache (its
question, then its generated tokens) sits in a growing numpy buffer [rows, kv_heads, length,
head_dim] per layer, padded to the longest row and masked; buffers grow in rows and in length as
rows are admitted and decode, and are never sized for max_new_tokens up front.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from verisolve.inference.onnx_decoder import CacheLayout, last_logits
from verisolve.inference.prefix_decoder import _prefix_name
from verisolve.inference.providers import create_session

# Own-cache buffers grow in steps of this many positions, so that a grown buffer lasts a while
# and the padding a step attends to stays short.
LENGTH_CHUNK = 32
MIN_ROWS = 8


@dataclass(frozen=True, slots=True)
class QuestionCache:
    """One problem's question after the exemplars: its cache per layer [1, kvh, L, dim]."""

    arrays: tuple[NDArray[Any], ...]
    length: int


class CascadeDecoder:
    """A BatchBackend: optimum's graph for prefills, the cascade graph for batch steps."""

    def __init__(self, prefill: ort.InferenceSession, step: ort.InferenceSession) -> None:
        self.prefill_session = prefill
        self.step_session = step
        self.layout = CacheLayout.of(prefill)
        prefix = [_prefix_name(n) for n in self.layout.present_names]
        self.prefix_names = prefix
        self.own_names = [n.replace("prefix_", "own_") for n in prefix]
        self.new_names = [n.replace("prefix_", "new_") for n in prefix]
        inputs = {i.name for i in step.get_inputs()}
        expected = {"input_ids", "position_ids", "own_bias", *prefix, *self.own_names}
        if inputs != expected:
            differ = sorted(inputs ^ expected)[:4]
            raise ValueError(f"the cascade graph does not match the decoder graph: {differ}")
        self._shared: dict[tuple[int, ...], list[NDArray[Any]]] = {}

    @classmethod
    def load(
        cls,
        decoder_path: Path,
        cascade_path: Path,
        provider: str = "cpu",
        *,
        threads: int | None = None,
    ) -> CascadeDecoder:
        """Open both graphs; threads default to the cores this process may use."""
        threads = threads or len(os.sched_getaffinity(0))
        return cls(
            create_session(decoder_path, provider, threads=threads),
            create_session(cascade_path, provider, threads=threads),
        )

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of cache one token of one row holds, over every layer."""
        empty = self.layout.empty_past()
        per_layer = self.layout.kv_heads * self.layout.head_dim * empty.dtype.itemsize
        return per_layer * len(self.layout.present_names)

    def shared_prefix(self, ids: Sequence[int]) -> list[NDArray[Any]]:
        """The cache of the shared tokens, computed on first use and then reused."""
        key = tuple(ids)
        cached = self._shared.get(key)
        if cached is None:
            empty = [self.layout.empty_past()] * len(self.layout.past_names)
            cached = empty if not key else self._run_prefill(list(key), empty, 0)[1]
            self._shared[key] = cached
        return cached

    def _run_prefill(
        self, ids: list[int], past: list[NDArray[Any]], past_len: int
    ) -> tuple[NDArray[np.float32], list[NDArray[Any]]]:
        width = len(ids)
        feeds: dict[str, NDArray[Any]] = {
            "input_ids": np.asarray([ids], dtype=np.int64),
            "attention_mask": np.ones((1, past_len + width), dtype=np.int64),
        }
        if self.layout.has_position_ids:
            feeds["position_ids"] = np.arange(past_len, past_len + width, dtype=np.int64)[None]
        feeds.update(zip(self.layout.past_names, past, strict=True))
        logits, *present = self.prefill_session.run(["logits", *self.layout.present_names], feeds)
        return last_logits(logits)[0], present

    def open(self, shared_ids: Sequence[int]) -> CascadeBatch:
        """An empty batch whose rows attend to the cache of `shared_ids`."""
        return CascadeBatch(self, self.shared_prefix(shared_ids), len(shared_ids))


class CascadeBatch:
    """Rows of many problems: the shared prefix once, each row's own cache in growing buffers."""

    def __init__(
        self, decoder: CascadeDecoder, prefix: list[NDArray[Any]], prefix_len: int
    ) -> None:
        self.decoder = decoder
        self.prefix = dict(zip(decoder.prefix_names, prefix, strict=True))
        self.prefix_len = prefix_len
        self.rows = 0
        self.lengths = np.zeros(0, dtype=np.int64)
        empty = decoder.layout.empty_past()
        self.own = [np.zeros((0, *empty.shape[1:]), empty.dtype) for _ in decoder.own_names]

    def prefill(self, question_ids: Sequence[int]) -> tuple[NDArray[np.float32], QuestionCache]:
        """Run a question after the shared prefix: its last logits and its cache."""
        if not question_ids:
            raise ValueError("empty question: the prompt adds nothing after the shared prefix")
        past = list(self.prefix.values())
        logits, present = self.decoder._run_prefill(list(question_ids), past, self.prefix_len)
        arrays = tuple(np.ascontiguousarray(p[:, :, self.prefix_len :]) for p in present)
        return logits, QuestionCache(arrays, len(question_ids))

    def admit(self, prompt: object, count: int) -> None:
        """Append `count` rows that continue the prompt's question (no token fed yet)."""
        if not isinstance(prompt, QuestionCache):
            raise TypeError(f"admit takes what this batch's prefill returned, not {prompt!r}")
        first, end = self.rows, self.rows + count
        self._reserve(end, prompt.length)
        for buffer, array in zip(self.own, prompt.arrays, strict=True):
            buffer[first:end, :, : prompt.length] = array
        self.lengths[first:end] = prompt.length
        self.rows = end

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """Feed one token per row; the next logits [rows, vocab]."""
        rows = self.rows
        if len(tokens) != rows:
            raise ValueError(f"{len(tokens)} tokens for {rows} rows")
        lengths = self.lengths[:rows]
        self._reserve(rows, int(lengths.max()) + 1)
        width = self.own[0].shape[2]
        bias = np.where(np.arange(width) < lengths[:, None], 0.0, -np.inf).astype(np.float32)
        feeds: dict[str, NDArray[Any]] = {
            "input_ids": np.asarray(tokens, dtype=np.int64).reshape(rows, 1),
            "position_ids": (lengths + self.prefix_len).reshape(rows, 1),
            "own_bias": bias,
            **self.prefix,
        }
        feeds.update((n, b[:rows]) for n, b in zip(self.decoder.own_names, self.own, strict=True))
        logits, *new = self.decoder.step_session.run(["logits", *self.decoder.new_names], feeds)
        at = np.arange(rows)
        for buffer, value in zip(self.own, new, strict=True):
            buffer[at, :, lengths, :] = value[:, :, 0, :]
        self.lengths[:rows] += 1
        return np.ascontiguousarray(logits, dtype=np.float32)

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep these rows, in this order; only the rows that change place are moved."""
        moved = np.flatnonzero(rows != np.arange(len(rows)))
        sources = rows[moved]
        for buffer in self.own:
            buffer[moved] = buffer[sources]
        self.lengths[moved] = self.lengths[sources]
        self.rows = len(rows)
        longest = int(self.lengths[: self.rows].max()) if self.rows else 0
        if self.own[0].shape[2] > _round_up(longest + 1) + LENGTH_CHUNK:
            self._resize(self.own[0].shape[0], _round_up(longest + 1))

    def _reserve(self, rows: int, length: int) -> None:
        """Grow the buffers to hold `rows` rows of `length` positions."""
        capacity, width = self.own[0].shape[0], self.own[0].shape[2]
        if rows <= capacity and length <= width:
            return
        # Rows grow in small steps (they fill up once, early, while rows are short), so the
        # buffers never hold many more rows than the engine lets in.
        new_rows = capacity if rows <= capacity else max(MIN_ROWS, -(-rows // MIN_ROWS) * MIN_ROWS)
        self._resize(new_rows, max(width, _round_up(length)))

    def _resize(self, rows: int, width: int) -> None:
        """New buffers of this size, with the live rows copied over."""
        live, keep = self.rows, min(self.own[0].shape[2], width)
        # One layer at a time, each old buffer freed as soon as it is copied: the peak is the
        # cache plus one layer's buffer, not two caches.
        for i, buffer in enumerate(self.own):
            grown = np.zeros((rows, buffer.shape[1], width, buffer.shape[3]), buffer.dtype)
            grown[:live, :, :keep] = buffer[:live, :, :keep]
            self.own[i] = grown
            del buffer
        lengths = np.zeros(rows, dtype=np.int64)
        lengths[:live] = self.lengths[:live]
        self.lengths = lengths

    @property
    def cache_bytes(self) -> int:
        """Bytes the own-cache buffers hold now."""
        return sum(b.nbytes for b in self.own)


def _round_up(length: int) -> int:
    return -(-length // LENGTH_CHUNK) * LENGTH_CHUNK
