"""Continuous batching on a scripted backend: same candidates as the per-problem engine, full batch.

The script's logits are a pseudo-random function of each row's whole history, so a row that was
fed the wrong cache, token or random stream would write different tokens.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray

from verisolve.inference.batching import BatchGenerator, BatchItem
from verisolve.inference.engine import Completion, Generator
from verisolve.inference.sampling import SamplingParams
from verisolve.inference.scripted import (
    Script,
    ScriptedBackend,
    ScriptedBatchBackend,
    one_hot_logits,
)
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.tiny import EOS, build_tiny_tokenizer

SHARED = "Question: one?\nAnswer: 1\n#### 1\n\n"
CALL = "He pays 3*4 = <<3*4=9>>9 dollars.\n#### 9\n"
FIXED = "He pays 3*4 = <<3*4=12>>12 dollars.\n#### 12\n"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    return TextTokenizer.from_file(build_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def noisy(vocab: int) -> Script:
    """Logits drawn from a generator seeded by the row's whole history (prompt included)."""

    def script(history: Sequence[int]) -> NDArray[np.float32]:
        digest = hashlib.sha256(np.asarray(history, dtype=np.int64).tobytes()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        return (rng.standard_normal(vocab) * 3).astype(np.float32)

    return script


def items(count: int, *, temperature: float = 1.0) -> list[BatchItem[int]]:
    """Problems with different questions, N, seeds and budgets."""
    out = []
    for i in range(count):
        params = SamplingParams(
            n=1 + (5 * i) % 7,
            temperature=temperature,
            top_p=0.9 if i % 2 else 1.0,
            max_new_tokens=6 + (3 * i) % 11,
            seed=i % 3,
        )
        prompt = f"{SHARED}Question: how many {i} apples?\nAnswer:"
        out.append(BatchItem(i, prompt, params, key=f"p{i}", first_index=i % 2))
    return out


def eos_ids(tok: TextTokenizer) -> list[int]:
    """Every ninth id ends a row, so rows finish at many different steps."""
    return list(range(0, tok.vocab_size, 9))


def per_problem(
    tok: TextTokenizer, script: Script, problems: Sequence[BatchItem[int]], **kw: object
) -> dict[int, list[Completion]]:
    gen = Generator(ScriptedBackend(script), tok, **kw)  # type: ignore[arg-type]
    return {
        p.tag: gen.generate(p.prompt, p.params, key=p.key, first_index=p.first_index)
        for p in problems
    }


def batched(
    tok: TextTokenizer, script: Script, problems: Sequence[BatchItem[int]], **kw: object
) -> tuple[dict[int, list[Completion]], ScriptedBatchBackend]:
    backend = ScriptedBatchBackend(script)
    shared = tok.encode(SHARED)
    gen = BatchGenerator(backend, tok, shared_ids=shared, **kw)  # type: ignore[arg-type]
    return dict(gen.stream(problems)), backend


def same(a: Sequence[Completion], b: Sequence[Completion]) -> None:
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [(c.sample_index, c.text, c.finish_reason) for c in a] == [
        (c.sample_index, c.text, c.finish_reason) for c in b
    ]
    assert [(c.calculator_calls, c.calculator_failures) for c in a] == [
        (c.calculator_calls, c.calculator_failures) for c in b
    ]


@pytest.mark.parametrize("max_rows", [1, 3, 8, 64])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_candidates_match_the_per_problem_engine(
    tokenizer: TextTokenizer, max_rows: int, temperature: float
) -> None:
    script = noisy(tokenizer.vocab_size)
    problems = items(9, temperature=temperature)
    expected = per_problem(tokenizer, script, problems, eos_token_ids=eos_ids(tokenizer))
    got, _ = batched(
        tokenizer, script, problems, eos_token_ids=eos_ids(tokenizer), max_rows=max_rows
    )
    assert sorted(got) == sorted(expected)
    for tag, completions in expected.items():
        same(got[tag], completions)
    lengths = {c.num_tokens for cs in expected.values() for c in cs}
    assert len(lengths) > 3, "rows should finish at many different steps"


def test_order_and_mix_of_problems_change_no_candidate(tokenizer: TextTokenizer) -> None:
    script = noisy(tokenizer.vocab_size)
    problems = items(10)
    first, _ = batched(tokenizer, script, problems, eos_token_ids=eos_ids(tokenizer), max_rows=5)
    shuffled = list(problems)
    random.Random(4).shuffle(shuffled)
    second, _ = batched(tokenizer, script, shuffled[:6], eos_token_ids=eos_ids(tokenizer))
    for tag, completions in second.items():
        same(completions, first[tag])


def test_the_batch_stays_full_while_rows_wait(tokenizer: TextTokenizer) -> None:
    script = noisy(tokenizer.vocab_size)
    problems = items(12)
    # Problems with N >= 6 mix with the others as well.
    _, backend = batched(tokenizer, script, problems, eos_token_ids=eos_ids(tokenizer), max_rows=6)
    rows = backend.step_rows
    assert rows[0] == 6
    # A row that finishes is replaced at the next step until no row waits; then it only drains.
    first_short = next(i for i, r in enumerate(rows) if r < 6)
    assert all(a >= b for a, b in zip(rows[first_short:-1], rows[first_short + 1 :], strict=True))
    assert first_short > len(rows) // 2
    assert backend.opened == [tuple(tokenizer.encode(SHARED))]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_problems_that_fill_the_batch_mix_with_the_next_ones(
    tokenizer: TextTokenizer, temperature: float
) -> None:
    script = noisy(tokenizer.vocab_size)
    # N = 4 fills a batch of 4 rows and N = 6 spills over: their last rows share the batch with
    # the next problem's first ones, and every candidate is the per-problem engine's.
    problems = [
        replace(p, params=replace(p.params, n=n))
        for p, n in zip(items(5, temperature=temperature), [4, 2, 3, 6, 4], strict=True)
    ]
    expected = per_problem(tokenizer, script, problems, eos_token_ids=eos_ids(tokenizer))
    got, backend = batched(
        tokenizer, script, problems, eos_token_ids=eos_ids(tokenizer), max_rows=4
    )
    for tag, completions in expected.items():
        same(got[tag], completions)
    assert max(backend.step_rows) == 4


def test_the_kv_budget_caps_the_rows_in_flight(tokenizer: TextTokenizer) -> None:
    script = noisy(tokenizer.vocab_size)
    # One token budget everywhere, so rows' caches may all grow to about `longest` tokens.
    problems = [replace(p, params=replace(p.params, max_new_tokens=12)) for p in items(6)]
    shared = len(tokenizer.encode(SHARED))
    longest = max(len(tokenizer.encode(p.prompt)) - shared + 12 for p in problems)
    expected = per_problem(tokenizer, script, problems, eos_token_ids=eos_ids(tokenizer))
    got, backend = batched(
        tokenizer,
        script,
        problems,
        eos_token_ids=eos_ids(tokenizer),
        kv_budget_bytes=3 * longest + 2,
    )
    assert max(backend.step_rows) <= 3
    for tag, completions in expected.items():
        same(got[tag], completions)
    # A budget below one row still runs one row at a time rather than stall.
    _, tiny = batched(
        tokenizer, script, problems[:2], eos_token_ids=eos_ids(tokenizer), kv_budget_bytes=1
    )
    assert set(tiny.step_rows) == {1}


def test_a_problem_is_handed_back_when_its_last_row_ends(tokenizer: TextTokenizer) -> None:
    long = SamplingParams(n=2, temperature=0, max_new_tokens=40, stop=False, calculator=False)
    short = SamplingParams(n=2, temperature=0, max_new_tokens=3, stop=False, calculator=False)
    problems = [
        BatchItem("long", f"{SHARED}Question: a?\nAnswer:", long, key="a"),
        BatchItem("short", f"{SHARED}Question: b?\nAnswer:", short, key="b"),
    ]
    backend = ScriptedBatchBackend(lambda h: one_hot_logits(tokenizer.vocab_size, 5))
    gen = BatchGenerator(backend, tokenizer, shared_ids=tokenizer.encode(SHARED))
    done = [(tag, [c.num_tokens for c in cs]) for tag, cs in gen.stream(problems)]
    assert done == [("short", [3, 3]), ("long", [40, 40])]


def test_calculator_and_stops_per_row_across_problems(tokenizer: TextTokenizer) -> None:
    eos = tokenizer.encode(EOS, special_tokens=False)[0]

    def script(history: Sequence[int]) -> NDArray[np.float32]:
        text = tokenizer.decode(history).rsplit("Answer:", 1)[1]
        if not text:
            logits = np.full(tokenizer.vocab_size, -30.0, dtype=np.float32)
            logits[tokenizer.encode("H", special_tokens=False)[0]] = 0.0
            logits[tokenizer.encode("#", special_tokens=False)[0]] = 0.0
            return logits
        for target in (CALL, FIXED, "#### 5\n"):
            if target.startswith(text) and len(target) > len(text):
                rest = tokenizer.encode_continuation(target[len(text) :], after=text)
                return one_hot_logits(tokenizer.vocab_size, rest[0])
        return one_hot_logits(tokenizer.vocab_size, eos)

    params = SamplingParams(n=6, temperature=1.0, max_new_tokens=60, seed=2)
    problems = [
        BatchItem(i, f"{SHARED}Question: q{i}?\nAnswer:", params, key=f"k{i}") for i in range(4)
    ]
    kw = {"eos_token_ids": [eos], "stop": ["\n\n"]}
    expected = per_problem(tokenizer, script, problems, **kw)
    got, _ = batched(tokenizer, script, problems, max_rows=5, **kw)
    texts = {c.text for cs in got.values() for c in cs}
    assert texts == {FIXED.rstrip("\n"), "#### 5"}
    for tag, completions in expected.items():
        same(got[tag], completions)


def test_a_prompt_that_does_not_continue_the_shared_prefix_is_refused(
    tokenizer: TextTokenizer,
) -> None:
    gen = BatchGenerator(
        ScriptedBatchBackend(noisy(tokenizer.vocab_size)),
        tokenizer,
        shared_ids=tokenizer.encode(SHARED),
    )
    item = BatchItem(0, "Question: other\nAnswer:", SamplingParams(), key="x")
    with pytest.raises(ValueError, match="'x': its prompt does not continue the shared"):
        list(gen.stream([item]))
