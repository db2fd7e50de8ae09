"""The sampling engine on a scripted backend: forcing, stops, compaction, seeds (no model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from verisolve.inference.engine import Completion, Generator, swap_remove_order
from verisolve.inference.sampling import SamplingParams
from verisolve.inference.scripted import Script, ScriptedBackend, one_hot_logits
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.tiny import EOS, build_tiny_tokenizer

PROMPT = "Question: how much?\nAnswer:"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    return TextTokenizer.from_file(build_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def writer(tok: TextTokenizer, targets: Sequence[str], *, first: str = "") -> Script:
    """A script that writes the first target its row's text is a prefix of, then EOS.

    With `first`, the first token is a coin flip between the first tokens of those characters,
    so rows split by their random streams.
    """
    prompt_len = len(tok.encode(PROMPT))
    eos = tok.encode(EOS, special_tokens=False)[0]

    def script(history: Sequence[int]) -> NDArray[np.float32]:
        text = tok.decode(history[prompt_len:])
        if not text and first:
            logits = np.full(tok.vocab_size, -30.0, dtype=np.float32)
            for char in first:
                logits[tok.encode(char, special_tokens=False)[0]] = 0.0
            return logits
        for target in targets:
            if target.startswith(text) and len(target) > len(text):
                rest = tok.encode_continuation(target[len(text) :], after=text)
                return one_hot_logits(tok.vocab_size, rest[0])
        return one_hot_logits(tok.vocab_size, eos)

    return script


def run(
    tok: TextTokenizer,
    targets: Sequence[str],
    params: SamplingParams,
    *,
    stop: Sequence[str] = (),
    first: str = "",
    compact: bool = True,
    key: str = "p1",
) -> tuple[list[Completion], ScriptedBackend]:
    backend = ScriptedBackend(writer(tok, targets, first=first))
    eos = tok.encode(EOS, special_tokens=False)
    gen = Generator(backend, tok, eos_token_ids=eos, stop=stop, compact=compact)
    return gen.generate(PROMPT, params, key=key), backend


CALL = "He pays 3*4 = <<3*4=9>>9 dollars.\n#### 9\n"
FIXED = "He pays 3*4 = <<3*4=12>>12 dollars.\n#### 12\n"


def test_calculator_forces_the_result_over_the_model(tokenizer: TextTokenizer) -> None:
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=80)
    [one, two], _ = run(tokenizer, [CALL, FIXED], params)
    for cand in (one, two):
        assert cand.text == "He pays 3*4 = <<3*4=12>>12 dollars.\n#### 12"
        assert (cand.finish_reason, cand.calculator_calls, cand.calculator_failures) == (
            "answer",
            1,
            0,
        )
    plain, _ = run(tokenizer, [CALL, FIXED], SamplingParams(n=1, calculator=False))
    assert plain[0].text == CALL[:-1]
    assert plain[0].calculator_calls == 0


def test_a_refused_expression_leaves_the_row_to_the_model(tokenizer: TextTokenizer) -> None:
    text = "It is 7%2 = <<7%2=1>>1.\nThen <<2+2=4>>4 and <<5/0=5>>5\n#### 4\n"
    [cand], _ = run(tokenizer, [text], SamplingParams(n=1, max_new_tokens=100))
    assert cand.text == text[:-1]
    assert (cand.calculator_calls, cand.calculator_failures) == (3, 2)


def test_rows_split_and_force_independently(tokenizer: TextTokenizer) -> None:
    with_call = "A: <<2+2=5>>5\n#### 5\n"
    without = "B: it is 4, no doubt about it at all.\n#### 4\n"
    params = SamplingParams(n=16, temperature=1.0, max_new_tokens=60, seed=3)
    cands, backend = run(
        tokenizer, [with_call, "A: <<2+2=4>>4\n#### 4\n", without], params, first="AB"
    )
    texts = {c.text for c in cands}
    # Each row sampled its own first token from the prefill logits.
    assert texts == {"A: <<2+2=4>>4\n#### 4", without[:-1]}
    for cand in cands:
        assert cand.calculator_calls == (1 if cand.text.startswith("A") else 0)
    # Short rows left the batch: later steps ran on fewer rows.
    assert backend.step_rows[0] == 16
    assert backend.step_rows[-1] < 16
    assert [c.sample_index for c in cands] == list(range(16))


def test_dropping_finished_rows_changes_no_candidate(tokenizer: TextTokenizer) -> None:
    targets = ["A: <<6*7=42>>42\n#### 42\n", "B: a much longer answer that goes on.\n#### 1\n"]
    params = SamplingParams(n=12, temperature=1.0, max_new_tokens=40, seed=11)
    compact, dropped = run(tokenizer, targets, params, first="AB", compact=True)
    full, kept = run(tokenizer, targets, params, first="AB", compact=False)
    assert [strip_time(c) for c in compact] == [strip_time(c) for c in full]
    assert kept.step_rows == [12] * len(kept.step_rows)
    assert dropped.step_rows[-1] < 12


def strip_time(cand: Completion) -> tuple[object, ...]:
    return (cand.sample_index, cand.text, cand.token_ids, cand.finish_reason, cand.calculator_calls)


def test_same_seed_same_candidates_and_other_seeds_differ(tokenizer: TextTokenizer) -> None:
    targets = ["A: one.\n#### 1\n", "B: two.\n#### 2\n"]
    params = SamplingParams(n=16, temperature=1.0, seed=5)
    first, _ = run(tokenizer, targets, params, first="AB")
    again, _ = run(tokenizer, targets, params, first="AB")
    other_seed, _ = run(
        tokenizer, targets, SamplingParams(n=16, temperature=1.0, seed=6), first="AB"
    )
    other_key, _ = run(tokenizer, targets, params, first="AB", key="p2")
    texts = [c.text for c in first]
    assert texts == [c.text for c in again]
    assert texts != [c.text for c in other_seed]
    assert texts != [c.text for c in other_key]


def test_sample_indices_key_the_streams(tokenizer: TextTokenizer) -> None:
    """Rows 4..7 of one call equal a call that starts at index 4 (chunked generation)."""
    targets = ["A: one.\n#### 1\n", "B: two.\n#### 2\n"]
    backend = ScriptedBackend(writer(tokenizer, targets, first="AB"))
    gen = Generator(backend, tokenizer)
    params = SamplingParams(n=8, temperature=1.0, seed=2)
    whole = gen.generate(PROMPT, params, key="k")
    tail = gen.generate(
        PROMPT, SamplingParams(n=4, temperature=1.0, seed=2), key="k", first_index=4
    )
    assert [c.text for c in whole[4:]] == [c.text for c in tail]
    assert [c.sample_index for c in tail] == [4, 5, 6, 7]


@pytest.mark.parametrize(
    ("target", "stop", "max_new", "reason", "text"),
    [
        ("Hello there.", [], 50, "eos", "Hello there."),
        ("Hello.\n\nQuestion: more", ["\n\nQuestion:"], 50, "stop", "Hello."),
        ("It is 5.\n#### 5\nQuestion", ["\n\nQuestion:"], 50, "answer", "It is 5.\n#### 5"),
        ("one two three four five six seven", [], 3, "length", None),
    ],
)
def test_finish_reasons(
    tokenizer: TextTokenizer,
    target: str,
    stop: list[str],
    max_new: int,
    reason: str,
    text: str | None,
) -> None:
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new)
    [cand], _ = run(tokenizer, [target], params, stop=stop)
    assert cand.finish_reason == reason
    if text is not None:
        assert cand.text == text
    else:
        assert cand.num_tokens == max_new
        assert target.startswith(cand.text)


def test_stops_off_runs_to_the_token_budget(tokenizer: TextTokenizer) -> None:
    target = "It is 5.\n#### 5\n\nQuestion: and then some more words here"
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=200, stop=False)
    [cand], _ = run(tokenizer, [target], params, stop=["\n\nQuestion:"])
    assert (cand.finish_reason, cand.text) == ("eos", target)


@pytest.mark.parametrize(
    ("alive", "order"),
    [
        ([1, 1, 1, 1], [0, 1, 2, 3]),
        ([1, 0, 1, 1], [0, 3, 2]),
        ([0, 1, 0, 1, 1], [3, 1, 4]),
        ([1, 1, 0, 0], [0, 1]),
        ([0, 0, 0], []),
        ([0, 0, 1], [2]),
    ],
)
def test_swap_remove_moves_only_tail_rows_into_holes(alive: list[int], order: list[int]) -> None:
    got = swap_remove_order(np.array(alive, dtype=np.bool_))
    assert got.tolist() == order
    assert sorted(got.tolist()) == [i for i, a in enumerate(alive) if a]


def test_token_buffers_grow_as_rows_decode_not_n_times_max_new_tokens(
    tokenizer: TextTokenizer,
) -> None:
    import tracemalloc

    long = "He counts: " + " ".join(str(i) for i in range(60)) + ".\n#### 59\n"
    # 8 rows x 10^7 tokens would be 640 MB of int64 if allocated up front.
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=10_000_000)
    tracemalloc.start()
    try:
        cands, _ = run(tokenizer, [long], params)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(tokenizer.encode(long)) > 64  # past the first buffer: it grew on the way
    assert {c.text for c in cands} == {long[:-1]}
    assert peak < 64 * 1024 * 1024
