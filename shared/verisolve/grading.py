"""Grading completions written by anyone against gold answers (`verisolve grade`).

A line is `{"completion": str, "answer": str | number, "id": str | int (optional),
"question": str (optional)}`; `answer` is the gold, in any form a problem file accepts
(verisolve.problems). Ids may repeat: several samples of one problem are graded one by one.
A completion from which no answer can be read is a parse failure, and counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from verisolve.answers import extract_answer, is_correct
from verisolve.jsonl import (
    ErrorCollector,
    InvalidLineError,
    JsonlFileError,
    LineError,
    RawLine,
    Source,
    check_fields,
    numbered_lines,
    optional_text,
    read_object,
    required_text,
)
from verisolve.problems import gold_field, id_field
from verisolve.settings import get_settings

FIELDS = ("completion", "answer", "id", "question")


@dataclass(frozen=True, slots=True)
class GradedLine:
    """One completion's verdict."""

    line_no: int
    external_id: str | None
    predicted: str | None  # canonical, None when nothing parses
    gold: str  # canonical
    correct: bool


@dataclass(frozen=True, slots=True)
class GradeReport:
    """The verdicts of a file, and their totals."""

    lines: Sequence[GradedLine]

    @property
    def n(self) -> int:
        """How many completions were graded."""
        return len(self.lines)

    @property
    def correct(self) -> int:
        """How many completions reached the gold answer."""
        return sum(line.correct for line in self.lines)

    @property
    def parse_failures(self) -> int:
        """How many completions had no answer that parses."""
        return sum(line.predicted is None for line in self.lines)

    @property
    def accuracy(self) -> float:
        """The share of correct completions; 0.0 for an empty file."""
        return self.correct / self.n if self.n else 0.0

    def summary(self) -> dict[str, int | float]:
        """The totals as `verisolve grade --json` prints them."""
        return {
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "parse_failures": self.parse_failures,
        }


class GradeFileError(JsonlFileError):
    """A completions file with bad lines; nothing of it is graded."""


def grade_completion(completion: str, gold: str) -> tuple[str | None, bool]:
    """The answer read from a completion, and whether it equals the canonical gold."""
    predicted = extract_answer(completion)
    return predicted, is_correct(predicted, gold)


def grade_line(raw: RawLine, line_no: int, *, max_line_bytes: int) -> GradedLine | LineError | None:
    """One line graded: its verdict, the line's error, or None for a blank line."""
    try:
        obj = read_object(raw, line_no, max_line_bytes=max_line_bytes)
        if obj is None:
            return None
        check_fields(obj, FIELDS)
        completion = required_text(obj, "completion")
        gold = gold_field(obj, "answer")
        if gold is None:
            raise InvalidLineError("missing", "answer")
        external_id = id_field(obj)
        optional_text(obj, "question")
    except InvalidLineError as exc:
        return exc.at(line_no)
    predicted, correct = grade_completion(completion, gold[1])
    return GradedLine(line_no, external_id, predicted, gold[1], correct)


def grade_file(source: Source, *, max_line_bytes: int | None = None) -> GradeReport:
    """Every line of a completions file graded; raises GradeFileError on any bad line."""
    limit = get_settings().max_line_bytes if max_line_bytes is None else max_line_bytes
    graded: list[GradedLine] = []
    errors = ErrorCollector()
    for line_no, raw in numbered_lines(source, limit):
        line = grade_line(raw, line_no, max_line_bytes=limit)
        if isinstance(line, LineError):
            errors.add(line)
        elif line is not None:
            graded.append(line)
    if errors.count:
        raise GradeFileError(errors.errors, errors.count)
    return GradeReport(tuple(graded))
