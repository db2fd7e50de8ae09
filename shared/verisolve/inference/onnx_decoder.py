"""The backend for optimum's `text-generation-with-past` decoder graph.

The graph takes `input_ids`, `attention_mask`, `position_ids` and, per layer, a past key and
value of shape [rows, kv_heads, past, head_dim]; it returns logits and the present cache (past
plus the new tokens). Rows never need padding here: they share the prompt and advance in
lockstep, so every row has the same length.

Two ways to hold the cache between steps:
- numpy arrays (CPU): fed to `session.run` and returned by it;
- bound OrtValues (IOBinding): the present outputs stay where the session made them (on the GPU
  under CUDA) and are bound as the next step's past; expand and keep run a Gather graph on the
  same device. Only the logits come back to the host. This also runs on CPU, which is how the
  tests exercise it on machines without a GPU.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from verisolve.inference.kvgather import ELEM_TYPES, RowGather
from verisolve.inference.providers import create_session, session_device

_PAST_PREFIX = "past_key_values."
_PRESENT_PREFIX = "present."
# ONNX Runtime's tensor type names of the cache dtypes our graphs use, and numpy's.
NUMPY_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


@dataclass(frozen=True, slots=True)
class CacheLayout:
    """What optimum's decoder graph expects: names, cache dtype and the per-layer shape."""

    past_names: tuple[str, ...]
    present_names: tuple[str, ...]
    elem_type: str
    kv_heads: int
    head_dim: int
    has_position_ids: bool

    @classmethod
    def of(cls, session: ort.InferenceSession) -> CacheLayout:
        """Read the layout from the session's inputs and outputs."""
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        past = tuple(n for n in inputs if n.startswith(_PAST_PREFIX))
        if not past or "logits" not in outputs:
            raise ValueError("not a decoder-with-past graph (no past_key_values inputs or logits)")
        present = tuple(_PRESENT_PREFIX + n[len(_PAST_PREFIX) :] for n in past)
        missing = [n for n in present if n not in outputs]
        if missing:
            raise ValueError(f"decoder graph lacks outputs {missing}")
        first = inputs[past[0]]
        kv_heads, head_dim = first.shape[1], first.shape[3]
        if not isinstance(kv_heads, int) or not isinstance(head_dim, int):
            raise ValueError(
                f"cache input {first.name} has no static heads/head_dim: {first.shape}"
            )
        if first.type not in ELEM_TYPES or first.type not in NUMPY_TYPES:
            raise ValueError(f"unsupported cache type {first.type}")
        return cls(past, present, first.type, kv_heads, head_dim, "position_ids" in inputs)

    def empty_past(self) -> NDArray[Any]:
        """A zero-length past for one row (the prefill's input)."""
        dtype = NUMPY_TYPES[self.elem_type]
        return np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=dtype)


class OnnxDecoder:
    """A DecoderBackend over one optimum decoder session."""

    def __init__(self, session: ort.InferenceSession, *, bind: bool | None = None) -> None:
        self.session = session
        self.layout = CacheLayout.of(session)
        self.device = session_device(session)
        # IOBinding is what keeps the cache on the GPU; on CPU plain run() is as fast.
        self.bind = self.device[0] == "cuda" if bind is None else bind
        self.output_names = ["logits", *self.layout.present_names]
        self._gather: RowGather | None = None

    @classmethod
    def load(
        cls,
        model_path: Path,
        provider: str = "cpu",
        *,
        threads: int | None = None,
        bind: bool | None = None,
    ) -> OnnxDecoder:
        """Open the decoder graph on a provider (which must really be the one in use).

        Threads default to the cores this process may run on.
        """
        threads = threads or len(os.sched_getaffinity(0))
        return cls(create_session(model_path, provider, threads=threads), bind=bind)

    def prefill(self, prompt_ids: Sequence[int]) -> tuple[NDArray[np.float32], OnnxDecoding]:
        """Run the prompt as one row; its last logits and a decoding holding its cache."""
        if not prompt_ids:
            raise ValueError("empty prompt: the decoder needs at least one token")
        empty = [self.layout.empty_past()] * len(self.layout.past_names)
        decoding: OnnxDecoding = (
            BoundDecoding(self, [ort.OrtValue.ortvalue_from_numpy(e) for e in empty])
            if self.bind
            else NumpyDecoding(self, empty)
        )
        return decoding.run(np.asarray([prompt_ids], dtype=np.int64))[0], decoding

    def inputs(self, ids: NDArray[np.int64], past_len: int) -> dict[str, NDArray[np.int64]]:
        """The token inputs of one run: ids, an all-ones mask, positions after the past."""
        rows, width = ids.shape
        feeds = {"input_ids": ids, "attention_mask": np.ones((rows, past_len + width), np.int64)}
        if self.layout.has_position_ids:
            positions = np.arange(past_len, past_len + width, dtype=np.int64)
            feeds["position_ids"] = np.broadcast_to(positions, (rows, width))
        return feeds

    def gather(self) -> RowGather:
        """The row-gather graph on this session's device (built on first use)."""
        if self._gather is None:
            self._gather = RowGather.on_session(
                self.session, self.layout.elem_type, len(self.layout.past_names)
            )
        return self._gather


def last_logits(logits: NDArray[Any]) -> NDArray[np.float32]:
    """The last position's logits of every row, float32 and contiguous."""
    return np.ascontiguousarray(logits[:, -1, :], dtype=np.float32)


class OnnxDecoding(ABC):
    """One problem's decoding on the optimum graph; subclasses decide where the cache lives."""

    def __init__(self, decoder: OnnxDecoder) -> None:
        self.decoder = decoder
        self.past_len = 0

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """Feed one token per row; the next logits [rows, vocab]."""
        return self.run(np.asarray(tokens, dtype=np.int64)[:, None])

    @abstractmethod
    def run(self, ids: NDArray[np.int64]) -> NDArray[np.float32]:
        """Run the graph on ids [rows, width] after the cached positions; the last logits."""

    @abstractmethod
    def expand(self, n: int) -> None:
        """Repeat the prompt's single row n times."""

    @abstractmethod
    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep the given rows, in that order."""


class NumpyDecoding(OnnxDecoding):
    """The cache as numpy arrays, through `session.run` (CPU)."""

    def __init__(self, decoder: OnnxDecoder, past: list[NDArray[Any]]) -> None:
        super().__init__(decoder)
        self.past = past

    def run(self, ids: NDArray[np.int64]) -> NDArray[np.float32]:
        """One session.run; the presents become the past."""
        feeds: dict[str, NDArray[Any]] = dict(self.decoder.inputs(ids, self.past_len))
        feeds.update(zip(self.decoder.layout.past_names, self.past, strict=True))
        logits, *present = self.decoder.session.run(self.decoder.output_names, feeds)
        self.past = present
        self.past_len += ids.shape[1]
        return last_logits(logits)

    def expand(self, n: int) -> None:
        """Repeat the prompt's cache along the row axis."""
        self.past = [np.repeat(p, n, axis=0) for p in self.past]

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Move the rows that change place, in place; the cache is then a prefix of each array.

        Copying the whole cache (gigabytes at GSM8K lengths) every time a row finishes would
        cost about a step; the engine orders `rows` so that only a few rows move.
        """
        moved = np.flatnonzero(rows != np.arange(len(rows)))
        sources = rows[moved]
        for past in self.past:
            past[moved] = past[sources]  # the right side is a copy, so overlaps are safe
        self.past = [past[: len(rows)] for past in self.past]


class BoundDecoding(OnnxDecoding):
    """The cache as OrtValues on the session's device, through IOBinding."""

    def __init__(self, decoder: OnnxDecoder, past: list[ort.OrtValue]) -> None:
        super().__init__(decoder)
        # The prefill's empty past is a host value; ONNX Runtime copies inputs where needed.
        self.past = past

    def run(self, ids: NDArray[np.int64]) -> NDArray[np.float32]:
        """One bound run: presents stay on the device, only the logits come to the host."""
        decoder = self.decoder
        binding = decoder.session.io_binding()
        for name, value in decoder.inputs(ids, self.past_len).items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, value in zip(decoder.layout.past_names, self.past, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        device_type, device_id = decoder.device
        for name in decoder.layout.present_names:
            binding.bind_output(name, device_type, device_id)
        decoder.session.run_with_iobinding(binding)
        logits, *present = binding.get_outputs()
        self.past = present
        self.past_len += ids.shape[1]
        return last_logits(logits.numpy())

    def expand(self, n: int) -> None:
        """Gather row 0 n times, on the device."""
        self.past = self.decoder.gather()(self.past, np.zeros(n, dtype=np.int64))

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Gather the kept rows, on the device."""
        self.past = self.decoder.gather()(self.past, rows)
