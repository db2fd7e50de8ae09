"""The batch backend over the cascade graph (see modelstore/cascade_export.py).

One graph does everything: the few-shot exemplars are fed through it once per backend (so once
per worker and model) and their cache, at batch 1, is the prefix every row of every problem
attends to; a problem's prefill feeds only its question, with the exemplars as prefix; a step
feeds one token per row. Each row's own cache (its question, then its generated tokens) sits in
a growing numpy buffer [rows, kv_heads, length, head_dim] per layer, in the graph's cache dtype
(float16 in int8 builds), padded to the longest row and masked; buffers grow in rows and in
length as rows are admitted and decode, and are never sized for max_new_tokens up front.
On CUDA (BoundCascadeBatch) the same caches are OrtValues that never leave the device. A batch
may pin one problem's question into the shared prefix while only that problem's rows run (see
`_Pinning`).
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

from verisolve.inference.kvgather import CacheOps
from verisolve.inference.onnx_decoder import NUMPY_TYPES
from verisolve.inference.providers import create_session, session_device

# Own-cache buffers grow in steps of this many positions, so that a grown buffer lasts a while
# and the padding a step attends to stays short.
LENGTH_CHUNK = 32
MIN_ROWS = 8
# The shared prefix is fed this many tokens at a time, each chunk attending to the ones before
# as its prefix: a long few-shot prompt's attention scores never need more memory than this.
PREFIX_CHUNK = 128


class OutdatedCascadeGraphError(ValueError):
    """A cascade graph exported before it took more than one token per row (re-export it)."""


@dataclass(frozen=True, slots=True)
class QuestionCache:
    """One problem's question after the exemplars: its cache per layer [1, kvh, L, dim]."""

    arrays: tuple[NDArray[Any], ...]
    length: int


class CascadeDecoder:
    """A BatchBackend over the cascade graph: the shared prefix, prefills and batch steps."""

    def __init__(self, session: ort.InferenceSession, *, bind: bool | None = None) -> None:
        self.session = session
        self.device = session_device(session)
        # IOBinding keeps the caches on the GPU; on CPU numpy buffers written in place are faster
        # (a bound step rewrites every layer's cache to add one position).
        self.bind = self.device[0] == "cuda" if bind is None else bind
        self._ops: CacheOps | None = None
        self._bound_shared: dict[tuple[int, ...], list[ort.OrtValue]] = {}
        inputs = {i.name: i for i in session.get_inputs()}
        layers = sum(1 for name in inputs if name.startswith("own_key."))
        names = [f"{kind}.{i}" for i in range(layers) for kind in ("key", "value")]
        self.prefix_names = [f"prefix_{n}" for n in names]
        self.own_names = [f"own_{n}" for n in names]
        self.new_names = [f"new_{n}" for n in names]
        expected = {"input_ids", "position_ids", "own_bias", *self.prefix_names, *self.own_names}
        if not layers or set(inputs) != expected:
            differ = sorted(set(inputs) ^ expected)[:4]
            raise ValueError(f"not a cascade decode graph: {differ or 'no own caches'}")
        if inputs["input_ids"].shape[1] == 1:
            raise OutdatedCascadeGraphError(
                "the cascade graph takes one token per row: it predates prefills through it; "
                "re-export the model (verisolve models install-default, for the default one)"
            )
        own, prefix = inputs[self.own_names[0]], inputs[self.prefix_names[0]]
        self.kv_heads, self.head_dim = int(own.shape[1]), int(own.shape[3])
        self.own_type = own.type
        self.own_dtype = np.dtype(NUMPY_TYPES[own.type])
        self.prefix_dtype = np.dtype(NUMPY_TYPES[prefix.type])
        self._shared: dict[tuple[int, ...], list[NDArray[Any]]] = {}

    @classmethod
    def load(
        cls,
        cascade_path: Path,
        provider: str = "cpu",
        *,
        threads: int | None = None,
        bind: bool | None = None,
        profile: str | None = None,
    ) -> CascadeDecoder:
        """Open the graph; threads default to the cores this process may use.

        Without ONNX Runtime's CPU arena: a step's tensors change size with the rows and the
        longest row every step, and the arena kept the largest of each (measured on a job of 16
        problems at N = 16: peak 1014 MB without it, 1076 MB with, the same speed within 2%).
        The per-problem engine keeps it (without: 2.4x its peak and slower). `profile`: a file
        prefix to turn ONNX Runtime's profiler on (see `create_session`).
        """
        threads = threads or len(os.sched_getaffinity(0))
        session = create_session(
            cascade_path, provider, threads=threads, arena=False, profile=profile
        )
        return cls(session, bind=bind)

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of cache one token of one row holds, over every layer."""
        return self.kv_heads * self.head_dim * self.own_dtype.itemsize * len(self.own_names)

    def empty(self, dtype: np.dtype[Any], rows: int = 1) -> NDArray[Any]:
        """A zero-length cache of `rows` rows for one layer."""
        return np.zeros((rows, self.kv_heads, 0, self.head_dim), dtype=dtype)

    def shared_prefix(self, ids: Sequence[int]) -> list[NDArray[Any]]:
        """The cache of the shared tokens, computed on first use and then reused."""
        key = tuple(ids)
        cached = self._shared.get(key)
        if cached is None:
            cached = [self.empty(self.prefix_dtype)] * len(self.prefix_names)
            for start in range(0, len(key), PREFIX_CHUNK):
                _, fed = self.feed(list(key[start : start + PREFIX_CHUNK]), cached, start)
                cached = [
                    np.concatenate([past, new.astype(self.prefix_dtype)], axis=2)
                    for past, new in zip(cached, fed, strict=True)
                ]
            self._shared[key] = cached
        return cached

    def feed(
        self, ids: list[int], prefix: Sequence[NDArray[Any] | ort.OrtValue], position: int
    ) -> tuple[NDArray[np.float32], list[NDArray[Any]]]:
        """One row of tokens after `prefix`: its last logits [vocab] and the tokens' caches.

        The row has no cache of its own yet; the caches are [1, kvh, len(ids), dim] per layer,
        on the host (the prefix may be OrtValues on the session's device).
        """
        width = len(ids)
        feeds: dict[str, NDArray[Any]] = {
            "input_ids": np.asarray([ids], dtype=np.int64),
            "position_ids": np.arange(position, position + width, dtype=np.int64)[None],
            "own_bias": np.zeros((1, 0), dtype=np.float32),
        }
        feeds.update((n, self.empty(self.own_dtype)) for n in self.own_names)
        binding = self.session.io_binding()
        for name, value in [*feeds.items(), *zip(self.prefix_names, prefix, strict=True)]:
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in ["logits", *self.new_names]:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        logits, *fed = (value.numpy() for value in binding.get_outputs())
        return np.ascontiguousarray(logits[0], dtype=np.float32), fed

    def ops(self) -> CacheOps:
        """The cache ops on this session's device (built on first use)."""
        if self._ops is None:
            self._ops = CacheOps.on_session(self.session, self.own_type, len(self.own_names))
        return self._ops

    def upload(self, arrays: Sequence[NDArray[Any]]) -> list[ort.OrtValue]:
        """Copies of host arrays on this session's device."""
        device_type, device_id = self.device
        return [ort.OrtValue.ortvalue_from_numpy(a, device_type, device_id) for a in arrays]

    def open(self, shared_ids: Sequence[int]) -> CascadeBatch | BoundCascadeBatch:
        """An empty batch whose rows attend to the cache of `shared_ids`."""
        prefix = self.shared_prefix(shared_ids)
        if not self.bind:
            return CascadeBatch(self, prefix, len(shared_ids))
        key = tuple(shared_ids)
        bound = self._bound_shared.get(key)
        if bound is None:
            bound = self._bound_shared[key] = self.upload(prefix)
        return BoundCascadeBatch(self, prefix, len(shared_ids), bound)

    def no_question(self) -> QuestionCache:
        """The cache rows of a pinned question start with: nothing of their own yet."""
        arrays = tuple(self.empty(self.own_dtype) for _ in self.own_names)
        return QuestionCache(arrays, 0)


class _Pinning:
    """The shared prefix a batch's rows attend to: the exemplars, or the exemplars and one pinned
    question (see BatchDecoding.pin). Pinned, the question's keys and values are read once per
    step for all rows, as the per-problem engine reads its prompt's, instead of once per row,
    and rows of equal length need no padding.
    """

    decoder: CascadeDecoder
    rows: int
    prefix_len: int

    def _init_prefix(self, host: list[NDArray[Any]], length: int) -> None:
        self._host = host
        self._base_len = length
        self.prefix_len = length
        self.pinned: QuestionCache | None = None

    def pin(self, prompt: object | None) -> None:
        """Pin a prefilled question into the shared prefix, or unpin (None); rows must be 0."""
        if self.rows:
            raise ValueError("a batch is pinned or unpinned only while it holds no rows")
        if prompt is None:
            self._set_prefix(None, self._base_len)
            self.pinned = None
            return
        question = _question(prompt)
        joined = [
            np.concatenate([past, array.astype(past.dtype)], axis=2)
            for past, array in zip(self._host, question.arrays, strict=True)
        ]
        self._set_prefix(joined, self._base_len + question.length)
        self.pinned = question

    def _set_prefix(self, host: list[NDArray[Any]] | None, length: int) -> None:
        """Feed `host` (None: the exemplars alone) as the prefix, `length` tokens long."""
        raise NotImplementedError

    def _admitted(self, prompt: object) -> QuestionCache:
        """What admitted rows of `prompt` start their own caches with."""
        question = _question(prompt)
        if self.pinned is None:
            return question
        if question is not self.pinned:
            raise ValueError("rows of another question cannot join a batch pinned to one")
        return self.decoder.no_question()


def _question(prompt: object) -> QuestionCache:
    """`admit` and `pin` take what a batch's `prefill` returned."""
    if not isinstance(prompt, QuestionCache):
        raise TypeError(f"admit and pin take what this batch's prefill returned, not {prompt!r}")
    return prompt


class CascadeBatch(_Pinning):
    """Rows of many problems: the shared prefix once, each row's own cache in growing buffers."""

    def __init__(
        self, decoder: CascadeDecoder, prefix: list[NDArray[Any]], prefix_len: int
    ) -> None:
        self.decoder = decoder
        self._init_prefix(prefix, prefix_len)
        self.prefix = dict(zip(decoder.prefix_names, prefix, strict=True))
        self.rows = 0
        self.lengths = np.zeros(0, dtype=np.int64)
        self.own = [decoder.empty(decoder.own_dtype, 0) for _ in decoder.own_names]

    def prefill(self, question_ids: Sequence[int]) -> tuple[NDArray[np.float32], QuestionCache]:
        """Run a question after the shared prefix: its last logits and its cache."""
        if not question_ids:
            raise ValueError("empty question: the prompt adds nothing after the shared prefix")
        logits, fed = self.decoder.feed(list(question_ids), self._host, self._base_len)
        return logits, QuestionCache(tuple(fed), len(question_ids))

    def _set_prefix(self, host: list[NDArray[Any]] | None, length: int) -> None:
        chosen = self._host if host is None else host
        self.prefix = dict(zip(self.decoder.prefix_names, chosen, strict=True))
        self.prefix_len = length

    def admit(self, prompt: object, count: int) -> None:
        """Append `count` rows that continue the prompt's question (no token fed yet)."""
        prompt = self._admitted(prompt)
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
        logits, *new = self.decoder.session.run(["logits", *self.decoder.new_names], feeds)
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


class BoundCascadeBatch(_Pinning):
    """CascadeBatch's rows with every cache an OrtValue on the session's device (IOBinding).

    The GPU path: the shared prefix is uploaded once, and each row's own cache never leaves the
    device. A step's new keys and values are written at each row's position by a scatter run on
    the device, admitted rows are appended and finished ones gathered away there too (see
    kvgather.CacheOps); only token ids, positions, the mask and the logits cross to the host.
    Buffers are exactly the live rows, `width` positions long, grown in LENGTH_CHUNK steps.
    """

    def __init__(
        self,
        decoder: CascadeDecoder,
        host: list[NDArray[Any]],
        prefix_len: int,
        prefix: list[ort.OrtValue],
    ) -> None:
        self.decoder = decoder
        self._init_prefix(host, prefix_len)
        self._bound_base = self.prefix = prefix
        self.rows = 0
        self.width = 0
        self.lengths = np.zeros(0, dtype=np.int64)
        self.own: list[ort.OrtValue] = []

    def prefill(self, question_ids: Sequence[int]) -> tuple[NDArray[np.float32], QuestionCache]:
        """Run a question after the shared prefix: its last logits and its cache (on the host)."""
        if not question_ids:
            raise ValueError("empty question: the prompt adds nothing after the shared prefix")
        logits, fed = self.decoder.feed(list(question_ids), self._bound_base, self._base_len)
        return logits, QuestionCache(tuple(fed), len(question_ids))

    def _set_prefix(self, host: list[NDArray[Any]] | None, length: int) -> None:
        # A pinned prefix is uploaded once per pinned question (the exemplars' copy is kept).
        self.prefix = self._bound_base if host is None else self.decoder.upload(host)
        self.prefix_len = length

    def admit(self, prompt: object, count: int) -> None:
        """Append `count` rows that continue the prompt's question (no token fed yet)."""
        prompt = self._admitted(prompt)
        # At least one position: rows of a pinned question start with none of their own.
        self._widen(max(prompt.length, 1))
        decoder = self.decoder
        shape = (count, decoder.kv_heads, self.width, decoder.head_dim)
        blocks = []
        for array in prompt.arrays:
            block = np.zeros(shape, dtype=decoder.own_dtype)
            block[:, :, : prompt.length] = array
            blocks.append(block)
        if self.rows:
            self.own = decoder.ops().concat(self.own, blocks)
        else:
            self.own = decoder.upload(blocks)
        self.lengths = np.concatenate([self.lengths, np.full(count, prompt.length, np.int64)])
        self.rows += count

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """Feed one token per row; the next logits [rows, vocab]."""
        rows = self.rows
        if len(tokens) != rows:
            raise ValueError(f"{len(tokens)} tokens for {rows} rows")
        lengths = self.lengths
        self._widen(int(lengths.max()) + 1)
        decoder = self.decoder
        bias = np.where(np.arange(self.width) < lengths[:, None], 0.0, -np.inf).astype(np.float32)
        binding = decoder.session.io_binding()
        binding.bind_cpu_input("input_ids", np.asarray(tokens, dtype=np.int64).reshape(rows, 1))
        binding.bind_cpu_input("position_ids", (lengths + self.prefix_len).reshape(rows, 1))
        binding.bind_cpu_input("own_bias", bias)
        for name, value in zip(decoder.prefix_names, self.prefix, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name, value in zip(decoder.own_names, self.own, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        device_type, device_id = decoder.device
        for name in decoder.new_names:
            binding.bind_output(name, device_type, device_id)
        decoder.session.run_with_iobinding(binding)
        logits, *new = binding.get_outputs()
        self.own = decoder.ops().scatter(self.own, new, lengths)
        self.lengths = lengths + 1
        return np.ascontiguousarray(logits.numpy(), dtype=np.float32)

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep these rows, in this order (a gather on the device, unless nothing moves)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == self.rows and np.array_equal(rows, np.arange(self.rows)):
            return
        self.own = self.decoder.ops().gather(self.own, rows) if len(rows) else []
        self.lengths = self.lengths[rows]
        self.rows = len(rows)
        if not self.rows:
            self.width = 0
            return
        # As CascadeBatch: when the longest rows have left, later steps stop reading their padding.
        narrower = _round_up(int(self.lengths.max()) + 1)
        if self.width > narrower + LENGTH_CHUNK:
            self.own = self.decoder.ops().narrow(self.own, narrower)
            self.width = narrower

    def _widen(self, length: int) -> None:
        """Make the buffers at least `length` positions long (padded on the device)."""
        if length <= self.width:
            return
        width = _round_up(length)
        if self.rows:
            self.own = self.decoder.ops().pad(self.own, width - self.width)
        self.width = width

    @property
    def cache_bytes(self) -> int:
        """Bytes the own-cache buffers hold now."""
        decoder = self.decoder
        per_row = decoder.kv_heads * self.width * decoder.head_dim * decoder.own_dtype.itemsize
        return self.rows * per_row * len(self.own)
