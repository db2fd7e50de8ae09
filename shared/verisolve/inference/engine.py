"""The sampling engine: N candidates per problem from one prefill, calculator forcing, early exit.

Per problem: the prompt is prefilled once (batch 1) and its cache expanded to N rows; every row
samples its own first token from the prefill logits with its own random stream, keyed by
(seed, problem key, sample index). All live rows then decode together. When a row's text ends
inside `<<expr=`, the calculator's `result>>` is forced into that row one token per step while
the others keep sampling. A row finishes at EOS, a stop string, a complete `#### N` line or
max_new_tokens, and leaves the batch at once.

A candidate is reproducible for a given batch configuration (same N, backend and provider):
its tokens depend only on its stream and its logits, and finished rows leaving changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from verisolve.calculator import CalculatorError, calculate, find_open_call
from verisolve.inference.backends import DecoderBackend
from verisolve.inference.sampling import SamplingParams, draw_uniforms, row_streams, sample
from verisolve.inference.stopping import FinishReason, StopRules, TextEnd
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.manifest import Manifest

# The character that opens a calculator call's result: `<<expr=`.
CALL_TRIGGER = "="


@dataclass(frozen=True, slots=True)
class Completion:
    """One sampled solution."""

    sample_index: int
    text: str
    # Every generated token, forced ones and the one that ended the row included.
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    calculator_calls: int
    calculator_failures: int
    # Seconds from the start of the problem (prefill included) until this row finished.
    seconds: float

    @property
    def num_tokens(self) -> int:
        """How many tokens the row generated."""
        return len(self.token_ids)


class Generator:
    """Samples candidates from a decoder backend with a tokenizer, stop rules and calculator."""

    def __init__(
        self,
        backend: DecoderBackend,
        tokenizer: TextTokenizer,
        *,
        eos_token_ids: Sequence[int] = (),
        stop: Sequence[str] = (),
        compact: bool = True,
        manifest: Manifest | None = None,
    ) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.eos_token_ids = np.asarray(sorted(set(eos_token_ids)), dtype=np.int64)
        self.stop = tuple(stop)
        # Dropping finished rows is what makes the tail cheap; off only to test that it is exact.
        self.compact = compact
        self.manifest = manifest
        self._masks: dict[tuple[int, str], NDArray[np.bool_]] = {}

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        provider: str = "cpu",
        threads: int | None = None,
        bind: bool | None = None,
        prefix_shared: bool = True,
    ) -> Generator:
        """A generator for a model directory; its prefix-shared graph unless told otherwise."""
        from verisolve.inference.onnx_decoder import OnnxDecoder
        from verisolve.inference.prefix_decoder import PrefixDecoder

        manifest = Manifest.load(model_dir)
        if manifest.kind != "generator":
            raise ValueError(f"{model_dir} holds a {manifest.kind}, not a generator")
        decoder_file = manifest.graphs.get("decoder")
        if decoder_file is None:
            raise ValueError(f"{model_dir}: the manifest names no 'decoder' graph")
        prefix_file = manifest.graphs.get("decoder_prefix") if prefix_shared else None
        backend: DecoderBackend
        if prefix_file is not None:
            backend = PrefixDecoder.load(
                model_dir / decoder_file,
                model_dir / prefix_file,
                provider,
                threads=threads,
                bind=bind,
            )
        else:
            backend = OnnxDecoder.load(
                model_dir / decoder_file, provider, threads=threads, bind=bind
            )
        tokenizer = TextTokenizer.from_file(model_dir / manifest.tokenizer)
        return cls(
            backend,
            tokenizer,
            eos_token_ids=manifest.eos_token_ids,
            stop=manifest.stop,
            manifest=manifest,
        )

    def prompt_for(self, question: str) -> str:
        """The model's prompt (its manifest's template and exemplars) for one question."""
        if self.manifest is None:
            raise ValueError("this generator has no manifest: pass prompts as text")
        return self.manifest.prompt.render(question)

    def generate(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        *,
        key: str = "",
        first_index: int = 0,
    ) -> list[Completion]:
        """params.n candidates for one prompt, in sample-index order from first_index."""
        started = time.perf_counter()
        prompt_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        first_logits, decoding = self.backend.prefill(prompt_ids)
        decoding.expand(params.n)
        rows = _Rows(self, params, key, first_index, started)
        logits = np.broadcast_to(first_logits, (params.n, first_logits.shape[-1]))
        while True:
            tokens, kept = rows.advance(logits)
            if kept is None:
                return rows.candidates()
            if kept.size < len(tokens):
                decoding.keep(kept)
                tokens = tokens[kept]
            logits = decoding.step(tokens)

    def trigger_mask(self, vocab: int, chars: str) -> NDArray[np.bool_]:
        """Tokens whose text may show one of `chars` (cached per vocabulary size)."""
        mask = self._masks.get((vocab, chars))
        if mask is None:
            mask = self._masks[(vocab, chars)] = self.tokenizer.char_mask(chars, vocab)
        return mask


TOKENS_START = 64  # token columns per row at first


class _Rows:
    """Per-row state of one problem; rows are numbered by sample position 0..n-1."""

    def __init__(
        self, gen: Generator, params: SamplingParams, key: str, first_index: int, started: float
    ) -> None:
        self.gen = gen
        self.params = params
        self.first_index = first_index
        self.started = started
        n = params.n
        self.streams = row_streams(params.seed, key, range(first_index, first_index + n))
        # Grown as decoding goes (doubling), never n x max_new_tokens up front.
        self.tokens = np.zeros((n, min(params.max_new_tokens, TOKENS_START)), dtype=np.int64)
        self.steps = 0
        # The batch's rows, in the order the decoding holds them.
        self.live = np.arange(n, dtype=np.int64)
        # Without compaction, finished rows stay in the batch and are only marked.
        self.active = np.ones(n, dtype=np.bool_)
        self.forced: dict[int, list[int]] = {}
        self.calls = np.zeros(n, dtype=np.int64)
        self.failures = np.zeros(n, dtype=np.int64)
        self.results: list[Completion | None] = [None] * n
        self.rules = StopRules(gen.stop if params.stop else (), answer_line=params.stop)
        chars = self.rules.trigger_chars + (CALL_TRIGGER if params.calculator else "")
        self.chars = chars

    def advance(
        self, logits: NDArray[np.float32]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64] | None]:
        """Sample one token per batch row; (tokens, batch positions to keep) or None when done."""
        p = self.params
        uniforms = draw_uniforms([self.streams[r] for r in self.live.tolist()])
        tokens = sample(logits, uniforms, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p)
        self._force(tokens)
        self._reserve(self.steps + 1)
        self.tokens[self.live, self.steps] = tokens
        self.steps += 1
        ended = self._check(tokens, logits.shape[-1])
        for position, (reason, end) in ended.items():
            self._finish(int(self.live[position]), reason, end)
        if not self.active[self.live].any():
            return tokens, None
        if not self.gen.compact:
            return tokens, np.arange(len(self.live), dtype=np.int64)
        kept = swap_remove_order(self.active[self.live])
        self.live = self.live[kept]
        return tokens, kept

    def _reserve(self, steps: int) -> None:
        """Room for `steps` tokens per row: the buffer doubles, up to max_new_tokens."""
        width = self.tokens.shape[1]
        if steps <= width:
            return
        grown = np.zeros(
            (self.tokens.shape[0], min(2 * width, self.params.max_new_tokens)), np.int64
        )
        grown[:, :width] = self.tokens
        self.tokens = grown

    def _force(self, tokens: NDArray[np.int64]) -> None:
        """Replace sampled tokens by the next forced calculator token, where one is pending."""
        if not self.forced:
            return
        position = {int(r): i for i, r in enumerate(self.live.tolist())}
        for row in list(self.forced):
            queue = self.forced[row]
            tokens[position[row]] = queue.pop(0)
            if not queue:
                del self.forced[row]

    def _check(self, tokens: NDArray[np.int64], vocab: int) -> dict[int, tuple[FinishReason, int]]:
        """Batch positions whose row ended this step, with the reason and the text end."""
        active = self.active[self.live]
        ended: dict[int, tuple[FinishReason, int]] = {}
        eos = np.isin(tokens, self.gen.eos_token_ids) & active
        for position in np.flatnonzero(eos).tolist():
            ended[position] = ("eos", -1)
        if self.chars:
            triggered = self.gen.trigger_mask(vocab, self.chars)[tokens] & active & ~eos
            ended.update(self._check_texts(np.flatnonzero(triggered).tolist()))
        if self.steps >= self.params.max_new_tokens:
            for position in np.flatnonzero(active).tolist():
                ended.setdefault(position, ("length", -1))
        return ended

    def _check_texts(self, positions: list[int]) -> dict[int, tuple[FinishReason, int]]:
        """Stop rules and calculator calls for rows whose last token may have completed one."""
        if not positions:
            return {}
        rows = [int(self.live[i]) for i in positions]
        texts = self.gen.tokenizer.decode_batch(
            [self.tokens[r, : self.steps].tolist() for r in rows]
        )
        ended: dict[int, tuple[FinishReason, int]] = {}
        for position, row, text in zip(positions, rows, texts, strict=True):
            end: TextEnd | None = self.rules.find(text)
            if end is not None:
                ended[position] = (end.reason, end.end)
            elif self.params.calculator and row not in self.forced:
                self._call(row, text)
        return ended

    def _call(self, row: int, text: str) -> None:
        """Queue the tokens of `result>>` when the row's text ends inside `<<expr=`."""
        expr = find_open_call(text)
        if expr is None:
            return
        self.calls[row] += 1
        try:
            result = calculate(expr)
        except CalculatorError:
            # As in the paper: a failed call leaves the row to sample on its own.
            self.failures[row] += 1
            return
        self.forced[row] = self.gen.tokenizer.encode_continuation(result + ">>", after=text)

    def _finish(self, row: int, reason: FinishReason, end: int) -> None:
        """Record a finished row's candidate and take it out of the batch."""
        ids = self.tokens[row, : self.steps].tolist()
        text = self.gen.tokenizer.decode(ids[:-1] if reason == "eos" else ids)
        if end >= 0:
            text = text[:end]
        self.results[row] = Completion(
            sample_index=self.first_index + row,
            text=text,
            token_ids=tuple(ids),
            finish_reason=reason,
            calculator_calls=int(self.calls[row]),
            calculator_failures=int(self.failures[row]),
            seconds=time.perf_counter() - self.started,
        )
        self.active[row] = False
        self.forced.pop(row, None)

    def candidates(self) -> list[Completion]:
        """Every row's candidate, in sample order."""
        done = [c for c in self.results if c is not None]
        if len(done) != len(self.results):
            raise RuntimeError("decoding ended with unfinished rows")
        return done


def swap_remove_order(alive: NDArray[np.bool_]) -> NDArray[np.int64]:
    """The surviving rows, ordered so that survivors from the tail fill the holes ahead.

    A cache can then be compacted in place by moving only the rows that fill holes, and the
    first len(result) rows of the old buffer become the new one.
    """
    kept = int(alive.sum())
    order = np.arange(kept, dtype=np.int64)
    holes = np.flatnonzero(~alive[:kept])
    order[holes] = np.flatnonzero(alive[kept:]) + kept
    return order
