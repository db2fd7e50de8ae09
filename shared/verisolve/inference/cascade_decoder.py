"""The batch backend over the cascade graph (see modelstore/cascade_export.py).

One graph does everything: the few-shot exemplars are fed through it once per backend (so once
per worker and model) and their cache, at batch 1, is the prefix every row of every problem
attends to; a problem's prefill feeds only its question, with the exemplars as prefix; a step
feeds one token per row. Each row's own cache (its question, then its generated tokens) lives
in blocks of a pool per layer [blocks, kv_heads, S, head_dim], in the graph's cache dtype
(float16 in int8 builds), as vLLM's paged attention keeps it: a row takes a block when its last
one is full and gives its blocks back when it leaves, a step attends every row only to its own
length (never the padding to the longest row in flight), and rows leave or change places without
a copy. The pool grows as rows are admitted and decode, and is compacted when most of it is free.
On CUDA the pools are OrtValues that never leave the device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from verisolve.inference.device_sampling import DeviceLogits, DeviceSampler
from verisolve.inference.kvgather import CacheOps
from verisolve.inference.onnx_decoder import NUMPY_TYPES
from verisolve.inference.providers import create_session, session_device
from verisolve.modelstore.cascade_export import (
    BLOCK_TABLES,
    IN_ORDER_KEY,
    NO_SCORE,
    SENTINEL_FEATURE,
)

logger = logging.getLogger(__name__)

# A step reads every block of the pool, free ones included: before a step, a pool more than a
# quarter free (and by more than MIN_BLOCKS) is compacted. It grows by at least MIN_BLOCKS and
# an eighth of itself (below the compaction threshold), so that a grown pool lasts a while.
MIN_BLOCKS = 16
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

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        bind: bool | None = None,
        sample_on_device: bool | None = None,
    ) -> None:
        self.session = session
        self.device = session_device(session)
        # IOBinding keeps the caches on the GPU; on CPU numpy buffers written in place are faster
        # (a bound step rewrites every layer's cache to add one position).
        self.bind = self.device[0] == "cuda" if bind is None else bind
        # A bound step's logits stay on the device and are sampled there (device_sampling.py);
        # on CPU numpy samples faster than the graph does (5.9 against 8.7 ms at 64 rows).
        on_device = self.device[0] == "cuda" if sample_on_device is None else sample_on_device
        if on_device and not self.bind:
            raise ValueError("sampling on the device needs the bound batch (bind=True)")
        self.sample_on_device = on_device
        self._sampler: DeviceSampler | None = None
        self._ops: CacheOps | None = None
        self._bound_shared: dict[tuple[int, ...], list[ort.OrtValue]] = {}
        inputs = {i.name: i for i in session.get_inputs()}
        layers = sum(1 for name in inputs if name.startswith("own_key."))
        names = [f"{kind}.{i}" for i in range(layers) for kind in ("key", "value")]
        self.prefix_names = [f"prefix_{n}" for n in names]
        self.own_names = [f"own_{n}" for n in names]
        self.new_names = [f"new_{n}" for n in names]
        if "own_bias" in inputs:
            raise OutdatedCascadeGraphError(
                "the cascade graph pads each row's cache to the longest row: it predates the "
                "paged caches; re-export the model (verisolve models install-default --force, "
                "for the default one)"
            )
        expected = {"input_ids", "position_ids", *BLOCK_TABLES, *self.prefix_names}
        expected.update(self.own_names)
        if not layers or set(inputs) != expected:
            differ = sorted(set(inputs) ^ expected)[:4]
            raise ValueError(f"not a cascade decode graph: {differ or 'no own caches'}")
        own, prefix = inputs[self.own_names[0]], inputs[self.prefix_names[0]]
        self.kv_heads, self.head_dim = int(own.shape[1]), int(own.shape[3])
        self.block_size = int(own.shape[2])
        self.own_type = own.type
        self.own_dtype = np.dtype(NUMPY_TYPES[own.type])
        self.prefix_dtype = np.dtype(NUMPY_TYPES[prefix.type])
        # Graphs exported since 2026-12-03 read the shared prefix after a sentinel position
        # (see cascade_graph.py), so that it is never empty; earlier ones read it as it is.
        self.sentinel = prefix.shape[3] == self.head_dim + SENTINEL_FEATURE
        if not self.sentinel and self.device[0] == "cuda":
            raise OutdatedCascadeGraphError(
                "the cascade graph reads an empty shared prefix before the first exemplar token, "
                "which ONNX Runtime's CUDA reductions refuse: it predates the prefix's sentinel "
                "position; re-export the model (verisolve models install-default --force, for "
                "the default one)"
            )
        # Graphs exported before the evening of 2026-12-03 add a row's blocks in an order that
        # depends on the batch's shape: they run, but a candidate can move with its batch-mates.
        metadata = session.get_modelmeta().custom_metadata_map
        self.in_order = metadata.get(IN_ORDER_KEY) == "1"
        if not self.in_order:
            logger.warning(
                "this cascade graph predates row sums in a fixed order: a candidate can change "
                "with the rows that share its batch (report --samples and --with then hold only "
                "approximately); re-export the model (verisolve models install-default --force, "
                "for the default one)"
            )
        self._shared: dict[tuple[int, ...], list[NDArray[Any]]] = {}

    @classmethod
    def load(
        cls,
        cascade_path: Path,
        provider: str = "cpu",
        *,
        threads: int | None = None,
        bind: bool | None = None,
        sample_on_device: bool | None = None,
        profile: str | None = None,
    ) -> CascadeDecoder:
        """Open the graph; threads default to the cores this process may use.

        `bind` (IOBinding: caches on the session's device) and `sample_on_device` (a bound
        step's logits sampled where they are, only tokens crossing) default to on for CUDA.

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
        return cls(session, bind=bind, sample_on_device=sample_on_device)

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of cache one token of one row holds, over every layer."""
        return self.kv_heads * self.head_dim * self.own_dtype.itemsize * len(self.own_names)

    def prefix_start(self) -> list[NDArray[Any]]:
        """The shared prefix's cache before its first token, per layer key and value: empty, or
        the sentinel position alone (key [1, kvh, 1, dim + 1]: NO_SCORE in its last feature)."""
        dtype, shape = self.prefix_dtype, (1, self.kv_heads, int(self.sentinel), self.head_dim)
        key = np.zeros((*shape[:3], self.head_dim + SENTINEL_FEATURE * self.sentinel), dtype)
        # float16 prefixes get their most negative finite value (exp of it less the max is 0).
        key[..., self.head_dim :] = max(NO_SCORE, float(np.finfo(dtype).min))
        return [key, np.zeros(shape, dtype)] * (len(self.prefix_names) // 2)

    def extend_prefix(
        self, prefix: Sequence[NDArray[Any]], fed: Sequence[NDArray[Any]]
    ) -> list[NDArray[Any]]:
        """The shared prefix's cache with the fed tokens' keys and values after it (each key
        with a sentinel feature of 0, when the graph reads one)."""
        extended = []
        for i, (past, new) in enumerate(zip(prefix, fed, strict=True)):
            new = new.astype(self.prefix_dtype)
            if self.sentinel and i % 2 == 0:  # keys and values alternate, keys first
                new = np.pad(new, ((0, 0), (0, 0), (0, 0), (0, SENTINEL_FEATURE)))
            extended.append(np.concatenate([past, new], axis=2))
        return extended

    def padded_prefix(self, prefix: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
        """The prefix with masked positions after it, up to a multiple of 64 bytes per head.

        Each row's sum of its prefix weights is a reduction over the prefix's positions, which
        ONNX Runtime runs with SIMD loads whose split between scalar head and vectors follows
        each row's address; with the batch's rows in one buffer, that address moved with the
        row's place and the number of rows, and so did the sum's last bits (3.7e-5 on the
        logits of the default model in fp32, and in int8, whose row quantisation rounds such
        differences into whole steps, 0.7, so that a sampled candidate changed with the batch).
        Padded to a multiple of 64 bytes, every row's positions start on the same alignment.
        Each padded position is a copy of the sentinel (`prefix_start`): weight 0. Graphs
        without the sentinel feature get the prefix as it is.
        """
        extra = -prefix[0].shape[2] % (64 // self.prefix_dtype.itemsize)
        if not self.sentinel or not extra:
            return list(prefix)
        return [
            np.concatenate([array, np.repeat(sentinel, extra, axis=2)], axis=2)
            for array, sentinel in zip(prefix, self.prefix_start(), strict=True)
        ]

    def empty_pool(self, blocks: int = 0) -> NDArray[Any]:
        """A pool of `blocks` zeroed blocks for one layer, in the own caches' dtype."""
        shape = (blocks, self.kv_heads, self.block_size, self.head_dim)
        return np.zeros(shape, dtype=self.own_dtype)

    def shared_prefix(self, ids: Sequence[int]) -> list[NDArray[Any]]:
        """The cache of the shared tokens, computed on first use and then reused."""
        key = tuple(ids)
        cached = self._shared.get(key)
        if cached is None:
            cached = self.prefix_start()
            for start in range(0, len(key), PREFIX_CHUNK):
                _, fed = self.feed(list(key[start : start + PREFIX_CHUNK]), cached, start)
                cached = self.extend_prefix(cached, fed)
            cached = self._shared[key] = self.padded_prefix(cached)
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
            **no_blocks(1, self.block_size),
        }
        feeds.update((n, self.empty_pool()) for n in self.own_names)
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

    def sampler(self) -> DeviceSampler:
        """The sampling graph on this session's device (built on first use)."""
        if self._sampler is None:
            self._sampler = DeviceSampler.on_session(self.session)
        return self._sampler

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
        return BoundCascadeBatch(self, bound, len(shared_ids))


def no_blocks(rows: int, block_size: int) -> dict[str, NDArray[Any]]:
    """Block tables for `rows` rows that hold no blocks of their own (an empty pool)."""
    return {
        "block_rows": np.zeros(0, dtype=np.int64),
        "block_bias": np.zeros((0, block_size), dtype=np.float32),
        "row_blocks": np.zeros((rows, 1), dtype=np.int64),
    }


def _question(prompt: object) -> QuestionCache:
    """`admit` takes what a batch's `prefill` returned."""
    if not isinstance(prompt, QuestionCache):
        raise TypeError(f"admit takes what this batch's prefill returned, not {prompt!r}")
    return prompt


class CascadeBatch:
    """Rows of many problems: the shared prefix once, each row's own cache in pool blocks.

    The bookkeeping is on the host: which row holds each block (`owner`, -1 for a free one),
    each row's blocks in order (`table`, -1 past them) and its length. The pools themselves are
    numpy arrays here; BoundCascadeBatch keeps them on the session's device.
    """

    def __init__(self, decoder: CascadeDecoder, prefix: Sequence[Any], prefix_len: int) -> None:
        self.decoder = decoder
        self.block_size = decoder.block_size
        self.prefix_len = prefix_len
        self.prefix = prefix
        self.rows = 0
        self.lengths = np.zeros(0, dtype=np.int64)
        self.table = np.full((0, 1), -1, dtype=np.int64)
        self.owner = np.zeros(0, dtype=np.int64)
        self.free: list[int] = []
        self.pools: list[Any] = [decoder.empty_pool() for _ in decoder.own_names]

    def prefill(self, question_ids: Sequence[int]) -> tuple[NDArray[np.float32], QuestionCache]:
        """Run a question after the shared prefix: its last logits and its cache."""
        if not question_ids:
            raise ValueError("empty question: the prompt adds nothing after the shared prefix")
        logits, fed = self.decoder.feed(list(question_ids), self.prefix, self.prefix_len)
        return logits, QuestionCache(tuple(fed), len(question_ids))

    @property
    def capacity(self) -> int:
        """Blocks in the pool, free ones included (a step reads them all)."""
        return len(self.owner)

    def admit(self, prompt: object, count: int) -> None:
        """Append `count` rows that continue the prompt's question (no token fed yet)."""
        prompt = _question(prompt)
        size = self.block_size
        first, end = self.rows, self.rows + count
        per_row = -(-prompt.length // size)
        self.lengths = np.concatenate([self.lengths, np.full(count, prompt.length, np.int64)])
        self._widen_table(per_row)
        more = np.full((count, self.table.shape[1]), -1, dtype=np.int64)
        self.table = np.concatenate([self.table, more])
        self.rows = end
        if not per_row:
            return
        blocks = self._allocate(count * per_row)
        self.table[first:end, :per_row] = blocks.reshape(count, per_row)
        self.owner[blocks] = np.repeat(np.arange(first, end), per_row)
        # The question cut into blocks (the last one zero-padded), the same for every row.
        padded = per_row * size - prompt.length
        data = []
        for array in prompt.arrays:
            whole = np.pad(array[0], ((0, 0), (0, padded), (0, 0)))
            cut = whole.reshape(whole.shape[0], per_row, size, -1).transpose(1, 0, 2, 3)
            data.append(np.tile(cut.astype(self.decoder.own_dtype), (count, 1, 1, 1)))
        self._write_blocks(blocks, data)

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32] | DeviceLogits:
        """Feed one token per row; the next logits [rows, vocab] (left on the device when the
        decoder samples there)."""
        rows = self.rows
        if len(tokens) != rows:
            raise ValueError(f"{len(tokens)} tokens for {rows} rows")
        if len(self.free) > max(MIN_BLOCKS, self.capacity // 4):
            self.compact()
        lengths = self.lengths
        logits, new = self._run(self.step_inputs(tokens))
        # Each row's new position: in its last block, or in a new one when that is full.
        size = self.block_size
        index, offsets = lengths // size, lengths % size
        starting = np.flatnonzero(offsets == 0)
        if len(starting):
            self._widen_table(int(index.max()) + 1)
            fresh = self._allocate(len(starting))
            self.table[starting, index[starting]] = fresh
            self.owner[fresh] = starting
        self._write_tokens(new, self.table[np.arange(rows), index], offsets)
        self.lengths = lengths + 1
        return logits

    def step_inputs(self, tokens: NDArray[np.int64]) -> dict[str, NDArray[Any]]:
        """The graph's host inputs for a step that feeds `tokens`: ids, positions, block tables
        (the prefix and the pools are bound beside them)."""
        return {
            "input_ids": np.asarray(tokens, dtype=np.int64).reshape(self.rows, 1),
            "position_ids": (self.lengths + self.prefix_len).reshape(self.rows, 1),
            **self._tables(),
        }

    def _tables(self) -> dict[str, NDArray[Any]]:
        """The graph's block tables for the rows as they are now."""
        size, capacity = self.block_size, self.capacity
        used = self.table[:, : max(1, -(-int(self.lengths.max(initial=0)) // size))]
        row_blocks = np.where(used >= 0, used, capacity)
        owner = self.owner
        held = owner >= 0
        # A block's filled positions: its row's length past the blocks before it. Free blocks
        # are read as if full (finite garbage that no row's table points to).
        order = np.zeros(capacity, dtype=np.int64)
        rows_of = np.nonzero(used >= 0)
        order[used[rows_of]] = rows_of[1]
        filled = np.full(capacity, size, dtype=np.int64)
        filled[held] = np.clip(self.lengths[owner[held]] - order[held] * size, 0, size)
        bias = np.where(np.arange(size) < filled[:, None], 0.0, -np.inf).astype(np.float32)
        return {
            "block_rows": np.where(held, owner, 0),
            "block_bias": bias,
            "row_blocks": row_blocks,
        }

    def _run(self, feeds: dict[str, Any]) -> tuple[NDArray[np.float32] | DeviceLogits, list[Any]]:
        """One run of the graph on the pools: the logits and the fed tokens' caches."""
        feeds.update(zip(self.decoder.prefix_names, self.prefix, strict=True))
        feeds.update(zip(self.decoder.own_names, self.pools, strict=True))
        logits, *new = self.decoder.session.run(["logits", *self.decoder.new_names], feeds)
        return np.ascontiguousarray(logits, dtype=np.float32), new

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep these rows, in this order; the others' blocks are freed (nothing is copied:
        the next step compacts the pool if it is mostly free)."""
        rows = np.asarray(rows, dtype=np.int64)
        renumber = np.full(self.rows + 1, -1, dtype=np.int64)
        renumber[rows] = np.arange(len(rows))
        held = self.owner >= 0
        self.owner[held] = renumber[self.owner[held]]
        self.free.extend(np.flatnonzero(held & (self.owner < 0)).tolist())
        self.lengths = self.lengths[rows]
        held_per_row = -(-int(self.lengths.max(initial=0)) // self.block_size)
        self.table = self.table[rows, : max(1, held_per_row)]
        self.rows = len(rows)

    def _widen_table(self, width: int) -> None:
        if width > self.table.shape[1]:
            extra = np.full((len(self.table), width - self.table.shape[1]), -1, np.int64)
            self.table = np.concatenate([self.table, extra], axis=1)

    def _allocate(self, count: int) -> NDArray[np.int64]:
        """`count` free blocks (the pool grows when too few are free), marked held by no row."""
        if count > len(self.free):
            grow = max(count - len(self.free), MIN_BLOCKS, self.capacity // 8)
            start = self.capacity
            self._grow_pools(grow)
            self.owner = np.concatenate([self.owner, np.full(grow, -1, dtype=np.int64)])
            # Under the free ones (blocks are taken from the end of the list), lowest on top.
            self.free = list(range(start + grow - 1, start - 1, -1)) + self.free
        taken = np.asarray(self.free[len(self.free) - count :][::-1], dtype=np.int64)
        del self.free[len(self.free) - count :]
        return taken

    def compact(self) -> None:
        """Move the held blocks to the front of a pool just large enough for them."""
        if not self.free:
            return
        held = np.flatnonzero(self.owner >= 0)
        renumber = np.full(self.capacity, -1, dtype=np.int64)
        renumber[held] = np.arange(len(held))
        self._gather_pools(held)
        self.owner = self.owner[held]
        self.table = np.where(self.table >= 0, renumber[np.maximum(self.table, 0)], -1)
        self.free = []

    # The pools' storage: numpy arrays here, OrtValues in BoundCascadeBatch. Grown or compacted
    # one layer at a time, each old pool freed as soon as it is copied: the peak is the cache
    # plus one layer's pool, not two caches.

    def _grow_pools(self, blocks: int) -> None:
        for i, pool in enumerate(self.pools):
            self.pools[i] = np.concatenate([pool, self.decoder.empty_pool(blocks)])

    def _gather_pools(self, blocks: NDArray[np.int64]) -> None:
        for i, pool in enumerate(self.pools):
            self.pools[i] = pool[blocks]

    def _write_blocks(self, blocks: NDArray[np.int64], data: list[NDArray[Any]]) -> None:
        for pool, array in zip(self.pools, data, strict=True):
            pool[blocks] = array

    def _write_tokens(
        self, new: list[Any], blocks: NDArray[np.int64], offsets: NDArray[np.int64]
    ) -> None:
        for pool, value in zip(self.pools, new, strict=True):
            pool[blocks, :, offsets, :] = value[:, :, 0, :]

    @property
    def cache_bytes(self) -> int:
        """Bytes the pools hold now."""
        per_block = self.decoder.kv_bytes_per_token * self.block_size
        return self.capacity * per_block


class BoundCascadeBatch(CascadeBatch):
    """CascadeBatch with every pool an OrtValue on the session's device (IOBinding).

    The GPU path: the shared prefix is uploaded once (per decoder), and the pools never leave the
    device. A step's new keys and values are written into their rows' blocks by a scatter run on
    the device, an admitted question's blocks are written there too, and the pool grows or is
    compacted there (see kvgather.CacheOps); only token ids, positions and the block tables
    cross to the device, and the logits back, or only the sampled tokens where the decoder
    samples on the device (`DeviceLogits`).
    """

    def __init__(
        self, decoder: CascadeDecoder, prefix: list[ort.OrtValue], prefix_len: int
    ) -> None:
        super().__init__(decoder, prefix, prefix_len)
        # The pools stay empty host arrays until their first blocks: growing them (a concat run
        # on the device) puts them there, and no zero-size tensor is ever uploaded.

    def _run(self, feeds: dict[str, Any]) -> tuple[NDArray[np.float32] | DeviceLogits, list[Any]]:
        decoder = self.decoder
        binding = decoder.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        prefix = zip(decoder.prefix_names, self.prefix, strict=True)
        for name, value in [*prefix, *zip(decoder.own_names, self.pools, strict=True)]:
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, value)
        device_type, device_id = decoder.device
        if decoder.sample_on_device:
            binding.bind_output("logits", device_type, device_id)
        else:
            binding.bind_output("logits", "cpu")
        for name in decoder.new_names:
            binding.bind_output(name, device_type, device_id)
        decoder.session.run_with_iobinding(binding)
        logits, *new = binding.get_outputs()
        if decoder.sample_on_device:
            return DeviceLogits(logits, decoder.sampler()), new
        return np.ascontiguousarray(logits.numpy(), dtype=np.float32), new

    def _grow_pools(self, blocks: int) -> None:
        zeros = [self.decoder.empty_pool(blocks)] * len(self.pools)
        self.pools = self.decoder.ops().concat(self.pools, zeros)

    def _gather_pools(self, blocks: NDArray[np.int64]) -> None:
        self.pools = self.decoder.ops().gather(self.pools, blocks)

    def _write_blocks(self, blocks: NDArray[np.int64], data: list[NDArray[Any]]) -> None:
        self.pools = self.decoder.ops().write_blocks(self.pools, data, blocks)

    def _write_tokens(
        self, new: list[Any], blocks: NDArray[np.int64], offsets: NDArray[np.int64]
    ) -> None:
        self.pools = self.decoder.ops().write_tokens(self.pools, new, blocks, offsets)
