"""Grading completions against gold answers (verisolve.grading)."""

from __future__ import annotations

import pytest

from verisolve.grading import GradedLine, GradeFileError, GradeReport, grade_file


def test_verdicts_and_totals() -> None:
    lines = [
        '{"completion": "3 + 4 = 7\\n#### 7", "answer": "#### 7", "id": "a"}',
        '{"completion": "So the answer is 8.", "answer": 7, "id": "a"}',  # ids may repeat
        "",
        '{"completion": "I cannot tell.", "answer": "7", "question": "Q?"}',
        '{"completion": "\\\\boxed{1/2}", "answer": "0.5", "id": 3}',
    ]
    report = grade_file(lines)
    assert list(report.lines) == [
        GradedLine(1, "a", "7", "7", True),
        GradedLine(2, "a", "8", "7", False),
        GradedLine(4, None, None, "7", False),
        GradedLine(5, "3", "0.5", "0.5", True),
    ]
    assert report.summary() == {"n": 4, "correct": 2, "accuracy": 0.5, "parse_failures": 1}


def test_empty_report() -> None:
    assert GradeReport(()).summary() == {
        "n": 0,
        "correct": 0,
        "accuracy": 0.0,
        "parse_failures": 0,
    }


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"answer": "7"}', "line 1: completion: missing"),
        ('{"completion": 7, "answer": "7"}', "line 1: completion: must be a string, not a number"),
        ('{"completion": "7"}', "line 1: answer: missing"),
        ('{"completion": "7", "answer": null}', "line 1: answer: missing"),
        (
            '{"completion": "7", "answer": "seven"}',
            "line 1: answer: not a number, nor a solution whose last line is '#### N' (or 'A: N')",
        ),
        (
            '{"completion": "7", "answer": "7", "gold": "7"}',
            "line 1: gold: unknown field (allowed: completion, answer, id, question)",
        ),
        (
            '{"completion": "7", "answer": "7", "id": []}',
            "line 1: id: must be a string or an integer, not an array",
        ),
        (
            '{"completion": "7", "answer": "7", "question": 1}',
            "line 1: question: must be a string, not a number",
        ),
        ("[]", "line 1: must be a JSON object, not an array"),
    ],
)
def test_bad_lines(line: str, error: str) -> None:
    with pytest.raises(GradeFileError) as info:
        grade_file([line])
    assert [str(e) for e in info.value.errors] == [error]


def test_any_bad_line_grades_nothing() -> None:
    good = '{"completion": "#### 7", "answer": "7"}'
    with pytest.raises(GradeFileError) as info:
        grade_file([good, "{", good, b'{"completion": "\xff", "answer": "7"}'])
    assert [e.line_no for e in info.value.errors] == [2, 4]
