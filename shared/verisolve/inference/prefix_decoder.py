"""The backend that decodes with the prefix-shared graph (see modelstore/prefix_export.py).

The prompt is prefilled at batch 1 with optimum's decoder graph; its present cache becomes the
prefix, kept at batch 1 for the whole problem. Each row's generated tokens form the suffix cache,
of batch N, which is all that `expand` creates and `keep` gathers. A decode step therefore reads
the prompt's cache once for all rows instead of once per row.

As in `onnx_decoder.py`, the caches are numpy arrays through `session.run` (CPU), or, with
IOBinding, OrtValues that stay on the session's device (the GPU under CUDA), with rows dropped
by a Gather graph on that device; only the logits come back to the host.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from verisolve.inference.kvgather import RowGather
from verisolve.inference.onnx_decoder import CacheLayout, last_logits
from verisolve.inference.providers import create_session, session_device

# optimum's present names ("present.3.key") -> our prefix names ("prefix_key.3").
_PRESENT_NAME = re.compile(r"^present\.(\d+)\.(key|value)$")


class PrefixDecoder:
    """A DecoderBackend: optimum's graph for the prefill, the prefix-shared graph for steps."""

    def __init__(
        self,
        prefill: ort.InferenceSession,
        step: ort.InferenceSession,
        *,
        bind: bool | None = None,
    ) -> None:
        self.prefill_session = prefill
        self.step_session = step
        self.layout = CacheLayout.of(prefill)
        self.prefix_names = [_prefix_name(n) for n in self.layout.present_names]
        self.suffix_names = [n.replace("prefix_", "suffix_") for n in self.prefix_names]
        self.present_names = [n.replace("prefix_", "present_") for n in self.prefix_names]
        _check_step_graph(step, self.prefix_names, self.suffix_names, self.present_names)
        self.device = session_device(step)
        # IOBinding is what keeps the caches on the GPU; on CPU plain run() is as fast.
        self.bind = self.device[0] == "cuda" if bind is None else bind
        self._gather: RowGather | None = None

    @classmethod
    def load(
        cls,
        decoder_path: Path,
        prefix_path: Path,
        provider: str = "cpu",
        *,
        threads: int | None = None,
        bind: bool | None = None,
        profile: str | None = None,
    ) -> PrefixDecoder:
        """Open both graphs on a provider; threads default to the cores this process may use.

        `profile`: a file prefix to turn ONNX Runtime's profiler on (see `create_session`).
        """
        threads = threads or len(os.sched_getaffinity(0))
        return cls(
            create_session(decoder_path, provider, threads=threads, profile=profile),
            create_session(prefix_path, provider, threads=threads, profile=profile),
            bind=bind,
        )

    def prefill(self, prompt_ids: Sequence[int]) -> tuple[NDArray[np.float32], PrefixDecoding]:
        """Run the prompt as one row; its last logits and a decoding that shares its cache."""
        if not prompt_ids:
            raise ValueError("empty prompt: the decoder needs at least one token")
        ids = np.asarray([prompt_ids], dtype=np.int64)
        width = ids.shape[1]
        feeds: dict[str, NDArray[Any]] = {
            "input_ids": ids,
            "attention_mask": np.ones((1, width), dtype=np.int64),
        }
        if self.layout.has_position_ids:
            feeds["position_ids"] = np.arange(width, dtype=np.int64)[None, :]
        empty = self.layout.empty_past()
        feeds.update((name, empty) for name in self.layout.past_names)
        logits, present = self.run(self.prefill_session, feeds, {}, self.layout.present_names)
        prefix = dict(zip(self.prefix_names, present, strict=True))
        return last_logits(logits)[0], PrefixDecoding(self, prefix, width)

    def run(
        self,
        session: ort.InferenceSession,
        host: dict[str, NDArray[Any]],
        caches: dict[str, Any],
        outputs: Sequence[str],
    ) -> tuple[NDArray[Any], list[Any]]:
        """One run: the logits on the host and the named cache outputs where caches live."""
        if not self.bind:
            logits, *present = session.run(["logits", *outputs], {**host, **caches})
            return logits, present
        binding = session.io_binding()
        for name, array in host.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name, value in caches.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in outputs:
            binding.bind_output(name, *self.device)
        session.run_with_iobinding(binding)
        logits, *values = binding.get_outputs()
        return logits.numpy(), values

    def gather(self) -> RowGather:
        """The row-gather graph for the suffix caches, on the session's device."""
        if self._gather is None:
            self._gather = RowGather.on_session(
                self.step_session, self.layout.elem_type, len(self.suffix_names)
            )
        return self._gather


def _prefix_name(present: str) -> str:
    match = _PRESENT_NAME.match(present)
    if match is None:
        raise ValueError(f"unexpected cache output name {present!r} in the decoder graph")
    return f"prefix_{match.group(2)}.{match.group(1)}"


def _check_step_graph(
    step: ort.InferenceSession, prefix: list[str], suffix: list[str], present: list[str]
) -> None:
    """Refuse a prefix graph whose inputs or outputs do not match the decoder graph's layers."""
    inputs = {i.name for i in step.get_inputs()}
    outputs = {o.name for o in step.get_outputs()}
    expected = {"input_ids", "position_ids", *prefix, *suffix}
    missing = sorted((expected ^ inputs) | ({"logits", *present} - outputs))
    if missing:
        raise ValueError(
            f"the prefix-shared graph does not match the {len(prefix) // 2}-layer decoder "
            f"graph: {', '.join(missing[:4])} differ"
        )


class PrefixDecoding:
    """One problem's decoding: the prompt's cache at batch 1, the rows' own tokens at batch N."""

    def __init__(self, decoder: PrefixDecoder, prefix: dict[str, Any], prefix_len: int) -> None:
        self.decoder = decoder
        self.prefix = prefix
        self.prefix_len = prefix_len
        self.suffix: dict[str, Any] = {}
        self.suffix_len = 0
        self.rows = 0
        self.expand(1)

    def expand(self, n: int) -> None:
        """N rows continuing the prompt: an empty suffix cache of batch n; the prefix stays."""
        if self.suffix_len:
            raise RuntimeError("expand after decoding started: the rows have their own tokens")
        empty = self.decoder.layout.empty_past()
        array = np.zeros((n, *empty.shape[1:]), empty.dtype)
        # Bound, a host value: ONNX Runtime copies inputs to the session's device as needed.
        value = ort.OrtValue.ortvalue_from_numpy(array) if self.decoder.bind else array
        self.suffix = dict.fromkeys(self.decoder.suffix_names, value)
        self.rows = n

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """Feed one token per row; the next logits [rows, vocab]."""
        if len(tokens) != self.rows:
            raise ValueError(f"{len(tokens)} tokens for {self.rows} rows")
        position = self.prefix_len + self.suffix_len
        host: dict[str, NDArray[Any]] = {
            "input_ids": np.asarray(tokens, dtype=np.int64).reshape(self.rows, 1),
            "position_ids": np.full((self.rows, 1), position, dtype=np.int64),
        }
        decoder = self.decoder
        logits, present = decoder.run(
            decoder.step_session, host, {**self.prefix, **self.suffix}, decoder.present_names
        )
        self.suffix = dict(zip(decoder.suffix_names, present, strict=True))
        self.suffix_len += 1
        return np.ascontiguousarray(logits, dtype=np.float32)

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep these rows of the suffix cache, in this order (the prefix is shared by all)."""
        names = self.decoder.suffix_names
        if self.decoder.bind:
            kept = self.decoder.gather()([self.suffix[n] for n in names], rows)
            self.suffix = dict(zip(names, kept, strict=True))
        else:
            # As NumpyDecoding does: move only the rows that change place (the engine orders
            # `rows` so that few do); the leading rows of each array are then the new cache.
            moved = np.flatnonzero(rows != np.arange(len(rows)))
            sources = rows[moved]
            for name in names:
                cache = self.suffix[name]
                cache[moved] = cache[sources]
                self.suffix[name] = cache[: len(rows)]
        self.rows = len(rows)
