"""Tests for the default prompt's few-shot exemplars: right arithmetic, GSM8K format, our own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from verisolve.answers import extract_answer, parse_gold
from verisolve.calculator import calculate
from verisolve.modelstore.exemplars import EXEMPLARS, STOP_STRINGS, default_prompt

ANNOTATION = re.compile(r"<<([^=<>]+)=([^<>]+)>>([^\s]+)")
IDS = [f"exemplar{i}" for i in range(len(EXEMPLARS))]


def test_there_are_four_exemplars() -> None:
    assert len(EXEMPLARS) == 4


@pytest.mark.parametrize("exemplar", EXEMPLARS, ids=IDS)
def test_every_annotation_is_what_the_calculator_computes(exemplar: dict[str, str]) -> None:
    solution = exemplar["solution"]
    found = ANNOTATION.findall(solution)
    assert found, "an exemplar shows the calculator at work"
    assert len(found) == solution.count("<<")
    for expr, result, written in found:
        assert calculate(expr) == result, expr
        # The text after the annotation repeats the result, as GSM8K solutions do.
        assert written.rstrip(".") == result


@pytest.mark.parametrize("exemplar", EXEMPLARS, ids=IDS)
def test_final_answer_is_the_last_computation(exemplar: dict[str, str]) -> None:
    solution = exemplar["solution"]
    lines = solution.split("\n")
    assert re.fullmatch(r"#### \d+", lines[-1])
    last_result = ANNOTATION.findall(solution)[-1][1]
    assert parse_gold(solution) == last_result
    assert extract_answer(solution) == last_result
    # One step a line, each step ending in its annotated result.
    assert all("<<" in line for line in lines[:-1])


def test_rendered_prompt_holds_every_exemplar_then_the_question() -> None:
    prompt = default_prompt().render("  How many legs do 3 cats have?\n")
    for exemplar in EXEMPLARS:
        assert f"Question: {exemplar['question']}\nAnswer: {exemplar['solution']}\n\n" in prompt
    assert prompt.endswith("\n\nQuestion: How many legs do 3 cats have?\nAnswer:")


def test_a_new_question_stops_a_candidate() -> None:
    completion = " 2+2 = <<2+2=4>>4\n#### 4\n\nQuestion: next"
    cut = min(completion.index(s) for s in STOP_STRINGS if s in completion)
    assert completion[:cut] == " 2+2 = <<2+2=4>>4\n#### 4"


def test_exemplars_share_no_passage_with_gsm8k(gsm8k_dir: Path) -> None:
    ours = set().union(*(_runs(e["question"] + " " + e["solution"]) for e in EXEMPLARS))
    for split in ("train.jsonl", "test.jsonl"):
        with (gsm8k_dir / split).open(encoding="utf-8") as rows:
            for row in map(json.loads, rows):
                shared = ours & _runs(row["question"] + " " + row["answer"])
                assert not shared, f"{split}: {shared}"


def _runs(text: str, n: int = 10) -> set[tuple[str, ...]]:
    """Every run of n consecutive words (a copied passage shares at least one)."""
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
