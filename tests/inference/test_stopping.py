"""Stop rules: stop strings and the complete `#### N` line."""

from __future__ import annotations

import pytest

from verisolve.inference.stopping import StopRules, TextEnd

RULES = StopRules(["\n\nQuestion:", "</s>"], answer_line=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He has 5 apples.\n#### 5", None),  # no newline yet: the number may go on
        ("He has 5 apples.\n#### 5\n", TextEnd("answer", 23)),
        ("#### 1,250.5 \nmore", TextEnd("answer", 13)),
        ("So\n#### -3\n", TextEnd("answer", 10)),
        ("So\n####  $12\n", TextEnd("answer", 12)),
        ("#### five\n", None),
        ("x #### 5\n", None),  # not at the start of a line
        ("It is 4.\n\nQuestion: next", TextEnd("stop", 8)),
        ("#### 4\n\nQuestion:", TextEnd("answer", 6)),
        ("Done</s>\n#### 4\n", TextEnd("stop", 4)),
        ("", None),
    ],
)
def test_find(text: str, expected: TextEnd | None) -> None:
    assert RULES.find(text) == expected


@pytest.mark.parametrize(
    ("stops", "answer", "chars"),
    [
        (["\n\nQuestion:", "</s>"], True, "\n:>"),
        (["\n\nQuestion:"], False, ":"),
        ([], True, "\n"),
        ([""], False, ""),
    ],
)
def test_trigger_chars(stops: list[str], answer: bool, chars: str) -> None:
    assert StopRules(stops, answer_line=answer).trigger_chars == chars


def test_without_answer_line_only_stop_strings_end() -> None:
    rules = StopRules(["\n\nQuestion:"], answer_line=False)
    assert rules.find("#### 5\n") is None
    assert rules.find("#### 5\n\nQuestion:") == TextEnd("stop", 6)
