"""llama.cpp as a decoder backend: the strongest CPU peer of the engines, on the same job.

llama-cpp-python (optional: the `bench-llama` extra) runs the model's GGUF file through
llama.cpp's low-level API, behind the engines' `DecoderBackend` contract. Per problem the prompt
is decoded once into sequence 0 and copied to the other N - 1 sequences (`llama_memory_seq_cp`:
one unified KV cache whose cells the copies share); then every live row decodes in one batch per
step, and a finished row's sequence is removed. Flash attention is off.

The project's own `Generator` drives it, so sampling, the stop rules, the calculator and the
token counts are the engines'; what differs is the forward pass (llama.cpp on the GGUF's
weights against ONNX Runtime on the exported graphs). The engine feeds llama.cpp token ids from
the model's tokenizer, so the GGUF must share its vocabulary (checked when it is loaded).

Rows are not bit-identical to a row decoded alone: in one unified cache, a step of several rows
gives logits a few tenths away from those of one row (measured on the default model; with a
cache per sequence they match exactly), so greedy rows of one prompt may part after some tokens.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verisolve.inference.engine import Generator
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.manifest import Manifest

# Prompt tokens per llama_decode call while prefilling (llama.cpp's default physical batch).
PREFILL_CHUNK = 512
# Text whose ids the GGUF's tokenizer and the model's must agree on.
VOCABULARY_PROBE = (
    "Question: Liam earns $12 an hour. How many dollars?\n"
    "Answer: He earned 12*5 = <<12*5=60>>60 dollars.\n#### 60\n\n"
)
# ggml's log levels: llama.cpp's errors reach stderr, its other messages are dropped.
_GGML_LOG_ERROR = 3
_GGML_LOG_CONT = 5


def _lib() -> Any:
    """The llama_cpp module (typed loosely: its ctypes bindings differ between releases)."""
    return importlib.import_module("llama_cpp")


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python's version; None when it cannot be imported."""
    try:
        lib = _lib()
    except (ImportError, OSError, RuntimeError):
        # A package whose shared library fails to load raises one of the last two.
        return None
    return str(getattr(lib, "__version__", "unknown"))


def _quiet(lib: Any) -> None:
    """Send llama.cpp's log to stderr only for errors (llama_cpp's default prints everything)."""
    global _log_callback
    if _log_callback is not None:
        return
    last = [0]

    def log(level: int, text: bytes, _user: object) -> None:
        level = last[0] if level == _GGML_LOG_CONT else level
        last[0] = level
        if level == _GGML_LOG_ERROR:
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    # Kept at module level: llama.cpp calls it for as long as the process lives.
    _log_callback = lib.llama_log_callback(log)
    lib.llama_log_set(_log_callback, ctypes.c_void_p(0))


_log_callback: Any = None


class LlamaModel:
    """A model's GGUF file loaded by llama.cpp on the CPU; a context per run (`generator`).

    `tokenizer` and `manifest` are the model's own (its directory's): the engine on top encodes
    and decodes with them and takes its stop strings and EOS ids from the manifest.
    """

    def __init__(
        self,
        path: Path,
        tokenizer: TextTokenizer,
        manifest: Manifest,
        *,
        threads: int | None = None,
    ) -> None:
        self.lib = lib = _lib()
        _quiet(lib)
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.path = path
        self.tokenizer = tokenizer
        self.manifest = manifest
        # Threads as the engines take them: all the cores this process may use by default.
        self.threads = threads or len(os.sched_getaffinity(0))
        self._model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ValueError(f"{path}: llama.cpp could not load this GGUF file")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.vocab_size = int(lib.llama_vocab_n_tokens(self._vocab))
        try:
            self.check_vocabulary()
        except ValueError:
            self.close()
            raise

    def tokenize(self, text: str) -> list[int]:
        """The GGUF tokenizer's ids for plain text (no BOS, special tokens not parsed)."""
        data = text.encode("utf-8")
        room = len(data) + 8
        ids = (self.lib.llama_token * room)()
        count = self.lib.llama_tokenize(self._vocab, data, len(data), ids, room, False, False)
        if count < 0:
            raise RuntimeError(f"llama_tokenize needs room for {-count} tokens")
        return list(ids[:count])

    def check_vocabulary(self) -> None:
        """Fail unless the GGUF reads the model's token ids as the same tokens."""
        expected = self.tokenizer.encode(VOCABULARY_PROBE, special_tokens=False)
        too_few = self.vocab_size < self.tokenizer.vocab_size
        if too_few or self.tokenize(VOCABULARY_PROBE) != expected:
            raise ValueError(
                f"{self.path.name}: its vocabulary is not the model's tokenizer's "
                "(pass the GGUF file of the same model)"
            )

    @contextlib.contextmanager
    def open(self, rows: int, cells: int) -> Iterator[LlamaBackend]:
        """A context for up to `rows` sequences in one unified KV cache of `cells` tokens."""
        backend = LlamaBackend(self, rows, cells)
        try:
            yield backend
        finally:
            backend.close()

    @contextlib.contextmanager
    def generator(self, rows: int, cells: int) -> Iterator[Generator]:
        """The project's engine on a context of `open(rows, cells)`, set up as the model's."""
        with self.open(rows, cells) as backend:
            yield Generator(
                backend,
                self.tokenizer,
                eos_token_ids=self.manifest.eos_token_ids,
                stop=self.manifest.stop,
                manifest=self.manifest,
            )

    def context(self, rows: int, cells: int) -> Any:
        """A new llama_context (the caller frees it)."""
        lib = self.lib
        params = lib.llama_context_default_params()
        params.n_ctx = cells
        params.n_batch = params.n_ubatch = max(rows, PREFILL_CHUNK)
        params.n_seq_max = rows
        params.n_threads = params.n_threads_batch = self.threads
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.kv_unified = True
        params.no_perf = True
        ctx = lib.llama_init_from_model(self._model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not open a context of {cells} cells")
        return ctx

    def close(self) -> None:
        """Free the weights."""
        if self._model:
            self.lib.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> LlamaModel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class LlamaBackend:
    """One llama.cpp context as a `DecoderBackend`: one problem's decoding at a time."""

    def __init__(self, model: LlamaModel, rows: int, cells: int) -> None:
        self.lib = lib = model.lib
        self.rows = rows
        self.cells = cells
        self.vocab_size = model.vocab_size
        self._ctx = model.context(rows, cells)
        self._memory = lib.llama_get_memory(self._ctx)
        capacity = max(rows, PREFILL_CHUNK)
        self._batch = lib.llama_batch_init(capacity, 0, 1)
        self.token = np.ctypeslib.as_array(self._batch.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(self._batch.pos, shape=(capacity,))
        self.wants_logits = np.ctypeslib.as_array(self._batch.logits, shape=(capacity,))
        np.ctypeslib.as_array(self._batch.n_seq_id, shape=(capacity,))[:] = 1

    def prefill(self, prompt_ids: Sequence[int]) -> tuple[NDArray[np.float32], LlamaDecoding]:
        """Clear the cache, decode the prompt into sequence 0: its last logits and a decoding."""
        if not prompt_ids:
            raise ValueError("an empty prompt")
        self.lib.llama_memory_clear(self._memory, False)  # the cells, not their buffers
        for start in range(0, len(prompt_ids), PREFILL_CHUNK):
            chunk = prompt_ids[start : start + PREFILL_CHUNK]
            last = start + len(chunk) == len(prompt_ids)
            outputs_from = len(chunk) - 1 if last else len(chunk)
            self.decode(chunk, range(start, start + len(chunk)), [0] * len(chunk), outputs_from)
        logits = self.outputs(1)[0]
        return logits, LlamaDecoding(self, len(prompt_ids))

    def decode(
        self,
        tokens: Sequence[int] | NDArray[np.int64],
        positions: Sequence[int] | range,
        seqs: Sequence[int],
        outputs_from: int,
    ) -> None:
        """One llama_decode call: token i at positions[i] of sequence seqs[i].

        The tokens from index `outputs_from` on get their logits computed.
        """
        n = len(tokens)
        self.token[:n] = tokens
        self.pos[:n] = positions
        self.wants_logits[:outputs_from] = 0
        self.wants_logits[outputs_from:n] = 1
        seq_id = self._batch.seq_id
        for i, seq in enumerate(seqs):
            seq_id[i][0] = seq
        self._batch.n_tokens = n
        status = self.lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(
                f"llama_decode failed ({status}) on {n} tokens in a cache of {self.cells} cells"
            )

    def outputs(self, rows: int) -> NDArray[np.float32]:
        """The logits of the last decode's `rows` outputs, float32 [rows, vocab] (a copy)."""
        pointer = self.lib.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self.vocab_size)).copy()

    def copy_sequence(self, source: int, target: int) -> None:
        """Make `target` continue `source` (in a unified cache the cells are shared)."""
        self.lib.llama_memory_seq_cp(self._memory, source, target, -1, -1)

    def remove_sequence(self, seq: int) -> None:
        """Free a sequence's cells."""
        self.lib.llama_memory_seq_rm(self._memory, seq, -1, -1)

    def close(self) -> None:
        """Free the batch and the context."""
        if self._ctx:
            self.lib.llama_batch_free(self._batch)
            self.lib.llama_free(self._ctx)
            self._ctx = None


class LlamaDecoding:
    """One problem's rows, each a llama.cpp sequence; all of them at the same position."""

    def __init__(self, backend: LlamaBackend, length: int) -> None:
        self.backend = backend
        self.position = length
        self.started = False
        # The sequence of each row, in the order the engine holds the rows.
        self.seqs = [0]

    def expand(self, n: int) -> None:
        """Copy the prompt's sequence 0 to sequences 1..n-1."""
        if self.started:
            raise RuntimeError("expand after decoding started")
        if n > self.backend.rows:
            raise ValueError(f"{n} rows: the context holds {self.backend.rows} sequences")
        for seq in range(1, n):
            self.backend.copy_sequence(0, seq)
        self.seqs = list(range(n))

    def step(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """Feed one token per row, all in one batch: the next logits [rows, vocab]."""
        n = len(self.seqs)
        if len(tokens) != n:
            raise ValueError(f"{len(tokens)} tokens for {n} rows")
        self.backend.decode(tokens, [self.position] * n, self.seqs, outputs_from=0)
        self.position += 1
        self.started = True
        return self.backend.outputs(n)

    def keep(self, rows: NDArray[np.int64]) -> None:
        """Keep these rows in this order; the others' sequences leave the cache."""
        kept = [self.seqs[i] for i in rows.tolist()]
        for seq in set(self.seqs) - set(kept):
            self.backend.remove_sequence(seq)
        self.seqs = kept
