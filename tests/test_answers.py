"""Answer extraction and numeric normalisation (verisolve.answers)."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import pytest

from verisolve.answers import (
    MAX_DIGITS,
    canonical,
    extract_answer,
    is_correct,
    parse_gold,
    parse_number,
)

METHODS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18", Fraction(18)),
        ("  18  ", Fraction(18)),
        ("1,234", Fraction(1234)),
        ("1,234,567", Fraction(1234567)),
        ("1,234.50", Fraction(2469, 2)),
        ("$18", Fraction(18)),
        ("$ 18", Fraction(18)),
        ("$1,200", Fraction(1200)),
        ("50%", Fraction(50)),
        ("12.5 %", Fraction(25, 2)),
        ("18.", Fraction(18)),
        ("$18.", Fraction(18)),
        ("-5", Fraction(-5)),
        ("+5", Fraction(5)),
        ("\u22125", Fraction(-5)),
        ("-$5", Fraction(-5)),
        ("$-5", Fraction(-5)),
        ("18.0", Fraction(18)),
        ("18.00", Fraction(18)),
        ("0.125", Fraction(1, 8)),
        (".5", Fraction(1, 2)),
        ("3/4", Fraction(3, 4)),
        ("-1/2", Fraction(-1, 2)),
        ("6/3", Fraction(2)),
        ("**18**", Fraction(18)),
        ("**18**.", Fraction(18)),
        ("*18*", Fraction(18)),
        ("`18`", Fraction(18)),
        ("1" * MAX_DIGITS, Fraction(int("1" * MAX_DIGITS))),
    ],
)
def test_parse_number_reads(text: str, expected: Fraction) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "18 apples",
        "1,23",  # not a thousands grouping
        "12,34,567",
        "1,2345",
        "1.2.3",
        "1e5",
        "3 / 4",  # an expression, not a number
        "1/0",
        "--5",
        "-$-5",
        "$",
        "%",
        ".",
        "1" * (MAX_DIGITS + 1),  # degenerate output, and beyond int()'s digit limit at scale
        "9" * 5000,
        "-" + " " * 20_000 + "x",
    ],
)
def test_parse_number_refuses(text: str) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(18), "18"),
        (Fraction(0), "0"),
        (Fraction(-7), "-7"),
        (Fraction(-7, 2), "-3.5"),
        (Fraction(1, 8), "0.125"),
        (Fraction(-1, 20), "-0.05"),
        (Fraction(1234567, 100), "12345.67"),
        (Fraction(1, 3), "1/3"),
        (Fraction(-2, 3), "-2/3"),
        (Fraction(1, 6), "1/6"),
    ],
)
def test_canonical(value: Fraction, expected: str) -> None:
    assert canonical(value) == expected
    assert parse_number(expected) == value  # canonical strings read back as the same number


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("He buys 2 + 3 = <<2+3=5>>5 pens.\n#### 5", "5"),
        ("It costs $1,200 in all.\n#### 1,200", "1200"),
        ("Step one.\n#### 18\n", "18"),
        ("Step one.\n####18", "18"),
        ("Step one.\n#### -4", "-4"),
        ("Step one.\n#### 2.50", "2.5"),
        ("She has 7 left.\nA: 7", "7"),  # the ground_truth of the paper's released samples
        ("42", "42"),
        ("  $42.00 ", "42"),
        ("3/4", "0.75"),
        ("Step one.\n#### seven", None),
        ("#### 5\nmore text after it", None),  # not a GSM8K solution: #### is not last
        ("The total is 5", None),
        ("", None),
        ("1/" + str(2**80), None),  # canonical form longer than MAX_ANSWER_CHARS
    ],
)
def test_parse_gold(answer: str, expected: str | None) -> None:
    assert parse_gold(answer) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        # 1. the #### line, the first one
        ("2 + 3 = <<2+3=5>>5\n#### 5", "5"),
        ("#### $1,234.", "1234"),
        ("#### **18**", "18"),
        ("#### 5\nThe answer is 6", "5"),
        ("#### 5\nQuestion: next one\n#### 6", "5"),
        ("#### seven\nThe answer is 7", "7"),  # no number after ####: fall through
        # 2. "The answer is N", the last one
        ("So the answer is 12.", "12"),
        ("The answer is: $1,200.00", "1200"),
        ("The final answer is **-3**", "-3"),
        ("the answer is 4. No wait, the answer is 5.", "5"),
        ("The answer is 4.\nA: 9", "4"),
        # 3. a line that is only "A: N", the last one
        ("9 * 2 = <<9*2=18>>18 dollars\nA: 18", "18"),
        ("A: 3\nthen 7 more\nA: 10", "10"),
        ("Answer: 42.", "42"),
        ("Final answer: **42**", "42"),
        ("A: 8.333333333333334", "8.333333333333334"),
        # 4. \boxed{N}, the last one
        ("so we get \\boxed{18} dollars, 20 in all", "18"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("$\\boxed{\\frac{3}{4}}$", "0.75"),
        ("\\boxed{-\\dfrac{1}{3}}", "-1/3"),
        ("\\boxed{\\$1{,}200}", "1200"),
        ("\\boxed{50\\%}", "50"),
        ("\\boxed{18 \\text{ apples}}", "18"),
        ("\\boxed{x + 1} leaves 7", "7"),  # boxed content not a number: fall through
        # 5. the last number
        ("She has 16 - 3 = 13 eggs", "13"),
        ("16-3", "3"),  # a minus between numbers is an operator, not a sign
        ("the change is -3", "-3"),
        ("it is 1,000,000 dollars.", "1000000"),
        ("half: 1/2", "0.5"),
        ("costs $4.50 each", "4.5"),
        ("a rise of 25%", "25"),
        ("numbers 3,4,5", "5"),
        ("version 1.2.3", "1.2"),
        # nothing parses
        ("I do not know.", None),
        ("", None),
        ("0.3333" + "3" * 300, None),  # runaway digits are not an answer
        ("answer is" + " " * 20_000 + "x", None),
        ("#### 1/" + str(2**80), None),  # canonical form longer than MAX_ANSWER_CHARS
    ],
)
def test_extract_answer(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("predicted", "gold", "expected"),
    [
        ("18", "18", True),
        ("18", "18.0", True),
        ("0.5", "1/2", True),
        ("-3.5", "-7/2", True),
        ("18", "19", False),
        ("0.3333", "1/3", False),
        (None, "18", False),
        ("18", None, False),
        (None, None, False),
        ("abc", "abc", False),
    ],
)
def test_is_correct(predicted: str | None, gold: str | None, expected: bool) -> None:
    assert is_correct(predicted, gold) is expected


def test_hostile_text_is_fast() -> None:
    texts = [
        "answer is" + " " * 50_000 + "x",
        "#### " + " " * 50_000 + "x",
        "A: 5" + " " * 50_000 + "x",
        "\\boxed{" + "{" * 50_000,
        "1," * 50_000,
        "-" * 50_000,
    ]
    start = time.perf_counter()
    for text in texts:
        extract_answer(text)
        parse_gold(text)
    assert time.perf_counter() - start < 1.0


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize(("name", "count"), [("train.jsonl", 7473), ("test.jsonl", 1319)])
def test_every_gsm8k_gold_parses(gsm8k_dir: Path, name: str, count: int) -> None:
    rows = _read_jsonl(gsm8k_dir / name)
    assert len(rows) == count
    for row in rows:
        solution = row["answer"]
        assert isinstance(solution, str)
        gold = parse_gold(solution)
        assert gold is not None, solution
        assert extract_answer(solution) == gold, solution


def test_paper_samples_ground_truth_and_flags(gsm8k_dir: Path) -> None:
    rows = _read_jsonl(gsm8k_dir / "example_model_solutions.jsonl")
    agree = 0
    for row in rows:
        truth = row["ground_truth"]
        assert isinstance(truth, str)
        gold = parse_gold(truth)
        assert gold is not None
        assert extract_answer(truth) == gold
        for method in METHODS:
            sample = row[method]
            assert isinstance(sample, dict)
            agree += is_correct(extract_answer(sample["solution"]), gold) == sample["is_correct"]
    rate = agree / (len(rows) * len(METHODS))
    print(f"agreement with the authors' is_correct flags: {rate:.4%}")
    assert rate >= 0.99
