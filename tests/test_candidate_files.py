"""Candidate files: grouping by problem, sample order, answers read from either field."""

from __future__ import annotations

import json

import pytest

from verisolve.candidate_files import CandidateFileError, load_candidates
from verisolve.evaluation import EvalCandidate, ProblemCandidates


def test_interleaved_lines_group_by_problem_in_sample_order() -> None:
    rows = [
        {"problem": "b", "gold": "#### 1,000", "answer": "$1,000.00", "calc_calls": 2},
        {"problem": 7, "gold": 2.5, "completion": "So 5/2 it is.\n#### 2.50"},
        {"problem": "b", "gold": "1000", "completion": "No number here."},
        {"problem": "7", "gold": "5/2", "answer": None, "calc_calls": 1, "calc_failures": 1},
    ]
    problems = load_candidates([json.dumps(r) for r in rows])
    assert problems == [
        ProblemCandidates(
            "b",
            "1000",
            (EvalCandidate(0, "1000", None, 2, None), EvalCandidate(1, None, None, None, None)),
        ),
        ProblemCandidates(
            "7", "2.5", (EvalCandidate(0, "2.5"), EvalCandidate(1, None, None, 1, 1))
        ),
    ]


def test_line_limit_and_error_count() -> None:
    long_line = json.dumps({"problem": "a", "gold": "1", "completion": "x" * 200})
    with pytest.raises(CandidateFileError) as info:
        load_candidates([long_line, "{}", ""], max_line_bytes=100)
    assert [str(e) for e in info.value.errors] == [
        f"line 1: line is {len(long_line)} bytes, over the limit of 100",
        "line 2: problem: missing",
    ]
