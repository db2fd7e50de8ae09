"""Reading and validating problem files: JSONL, one problem a line, all or nothing.

A line is `{"question": str, "answer": str | number (optional), "id": str | int (optional)}`.
`answer` is the gold answer: a GSM8K solution (last line `#### N`), a solution ending in
`A: N`, or a bare number; the GSM8K files load as they are. A line without an id gets its
line number as id ("7"), so an explicit id equal to another line's number is a duplicate.
`null` stands for an absent optional field. Blank lines are skipped (see verisolve.jsonl).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from verisolve.answers import MAX_DIGITS, parse_gold
from verisolve.jsonl import (
    ErrorCollector,
    InvalidLineError,
    JsonlFileError,
    LineError,
    RawLine,
    Source,
    check_fields,
    check_storable,
    json_type,
    numbered_lines,
    read_object,
    required_text,
)
from verisolve.settings import get_settings

FIELDS = ("question", "answer", "id")
MAX_ID_CHARS = 256  # the width of problems.external_id


@dataclass(frozen=True, slots=True)
class ProblemIn:
    """One validated problem, ready to store."""

    external_id: str
    question: str
    gold_raw: str | None  # the answer as written
    gold: str | None  # its canonical number (verisolve.answers.canonical)
    line_no: int


class ProblemFileError(JsonlFileError):
    """A problem file with bad lines; nothing of it is to be imported."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one line; defaults from the settings."""

    max_question_chars: int
    max_line_bytes: int

    @classmethod
    def resolve(
        cls, max_question_chars: int | None = None, max_line_bytes: int | None = None
    ) -> Limits:
        """The given limits, the settings' where not given."""
        settings = get_settings()
        return cls(
            max_question_chars=(
                settings.max_question_chars if max_question_chars is None else max_question_chars
            ),
            max_line_bytes=settings.max_line_bytes if max_line_bytes is None else max_line_bytes,
        )


def load_problems(
    source: Source,
    *,
    max_question_chars: int | None = None,
    max_line_bytes: int | None = None,
) -> list[ProblemIn]:
    """Every problem of a file (a path, or its lines); raises ProblemFileError on any bad line."""
    limits = Limits.resolve(max_question_chars, max_line_bytes)
    return parse_lines(numbered_lines(source, limits.max_line_bytes), limits)


def parse_lines(lines: Iterable[tuple[int, RawLine]], limits: Limits) -> list[ProblemIn]:
    """Every problem of numbered raw lines; raises ProblemFileError on any bad line."""
    seen_ids: dict[str, int] = {}
    problems: list[ProblemIn] = []
    errors = ErrorCollector()
    for line_no, raw in lines:
        result = validate_line(raw, line_no, seen_ids, limits)
        if isinstance(result, LineError):
            errors.add(result)
        elif result is not None:
            problems.append(result)
    if errors.count:
        raise ProblemFileError(errors.errors, errors.count)
    return problems


def validate_line(
    raw: RawLine, line_no: int, seen_ids: dict[str, int], limits: Limits | None = None
) -> ProblemIn | LineError | None:
    """One line checked: a problem, the line's error, or None for a blank line."""
    # seen_ids maps every id taken so far to its line and gains this line's id, so an upload
    # can validate as it streams, feeding lines in order.
    limits = limits or Limits.resolve()
    try:
        obj = read_object(raw, line_no, max_line_bytes=limits.max_line_bytes)
        if obj is None:
            return None
        check_fields(obj, FIELDS)
        external_id = _take_id(obj, line_no, seen_ids)
        question = _question(obj, limits.max_question_chars)
        gold = gold_field(obj, "answer")
    except InvalidLineError as exc:
        return exc.at(line_no)
    gold_raw, gold_canonical = gold or (None, None)
    return ProblemIn(external_id, question, gold_raw, gold_canonical, line_no)


def gold_field(obj: dict[str, Any], name: str) -> tuple[str, str] | None:
    """A gold answer field: (as written, canonical), None when absent; a JSON number counts."""
    value = obj.get(name)
    if isinstance(value, Decimal):
        value = _positional(value, name)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif value is not None and not isinstance(value, str):
        raise InvalidLineError(f"must be a string or a number, not {json_type(value)}", name)
    if value is None:
        return None
    check_storable(value, name)
    if not value.strip():
        raise InvalidLineError("empty (leave the field out when there is no gold answer)", name)
    gold = parse_gold(value)
    if gold is None:
        raise InvalidLineError(
            "not a number, nor a solution whose last line is '#### N' (or 'A: N')", name
        )
    return value, gold


def _positional(value: Decimal, name: str) -> str:
    """A JSON number in any form (1e2, 1.5E3, 0.0000001) written out in digits: "100"."""
    if abs(value.adjusted()) > MAX_DIGITS:
        raise InvalidLineError(f"a number over {MAX_DIGITS} digits is not an answer", name)
    return format(value, "f")


def id_field(obj: dict[str, Any]) -> str | None:
    """An explicit id (a string, or an integer written as one), or None when absent."""
    value = obj.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif value is not None and not isinstance(value, str):
        raise InvalidLineError(f"must be a string or an integer, not {json_type(value)}", "id")
    if value is None:
        return None
    check_storable(value, "id")
    if not value.strip():
        raise InvalidLineError("empty", "id")
    if len(value) > MAX_ID_CHARS:
        raise InvalidLineError(f"{len(value):,} characters, over the limit of {MAX_ID_CHARS}", "id")
    return value


def _take_id(obj: dict[str, Any], line_no: int, seen_ids: dict[str, int]) -> str:
    explicit = id_field(obj)
    external_id = str(line_no) if explicit is None else explicit
    first = seen_ids.setdefault(external_id, line_no)
    if first != line_no:
        taken_by_default = explicit is None or external_id == str(first)
        why = " (lines without an id take their line number as id)" if taken_by_default else ""
        raise InvalidLineError(f"{external_id!r} is already the id of line {first}{why}", "id")
    return external_id


def _question(obj: dict[str, Any], max_chars: int) -> str:
    question = required_text(obj, "question").strip()
    if not question:
        raise InvalidLineError("empty", "question")
    if len(question) > max_chars:
        raise InvalidLineError(
            f"{len(question):,} characters, over the limit of {max_chars:,}", "question"
        )
    return question
