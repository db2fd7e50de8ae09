"""Reading and validating candidate files (JSONL) for ``verisolve evaluate``, all or nothing.

A line is one candidate: ``{"problem": str | int, "gold": str | number, "completion": str}``
or the same with ``"answer": str | number | null`` (the system's final answer) in place of
``completion``; optional ``"score"`` (a probability in [0, 1]) and ``"calc_calls"`` /
``"calc_failures"`` (counts); ``"question"`` and ``"token_values"`` (what ``verisolve score``
reads and adds) are allowed and not used. ``gold`` takes any form a problem file accepts
(verisolve.problems). Lines are grouped by ``problem`` in order of first appearance; within
a problem, line order is sample order, so problems may be interleaved. Every line of a
problem carries the same gold answer, and either every line of the file has a score or none
has. An answer that does not parse is a parse failure, not a bad line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from verisolve.answers import canonical, extract_answer, parse_number
from verisolve.evaluation import EvalCandidate, ProblemCandidates
from verisolve.jsonl import (
    ErrorCollector,
    InvalidLineError,
    JsonlFileError,
    Source,
    check_fields,
    check_storable,
    json_type,
    numbered_lines,
    optional_text,
    read_object,
)
from verisolve.problems import gold_field
from verisolve.settings import get_settings

FIELDS = (
    "problem",
    "gold",
    "completion",
    "answer",
    "score",
    "calc_calls",
    "calc_failures",
    # What `verisolve score` reads and adds, so that its output is evaluated as it is; not used.
    "question",
    "token_values",
)


class CandidateFileError(JsonlFileError):
    """A candidate file with bad lines; nothing of it is evaluated."""


@dataclass(slots=True)
class _Problem:
    gold: str
    gold_line: int
    candidates: list[EvalCandidate] = field(default_factory=list)


@dataclass(slots=True)
class _FileState:
    """What later lines are checked against: problems so far, which lines had a score."""

    problems: dict[str, _Problem] = field(default_factory=dict)
    scored_line: int | None = None
    unscored_line: int | None = None


def _problem_id(obj: dict[str, Any]) -> str:
    value = obj.get("problem")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        what = "missing" if "problem" not in obj else f"must be a string, not {json_type(value)}"
        raise InvalidLineError(what, "problem")
    check_storable(value, "problem")
    if not value.strip():
        raise InvalidLineError("empty", "problem")
    return value


def _number(obj: dict[str, Any], name: str) -> int | Decimal | None:
    value = obj.get(name)
    if value is None or (isinstance(value, int | Decimal) and not isinstance(value, bool)):
        return value
    raise InvalidLineError(f"must be a number, not {json_type(value)}", name)


def _count(obj: dict[str, Any], name: str) -> int | None:
    value = _number(obj, name)
    if value is not None and (not isinstance(value, int) or value < 0):
        raise InvalidLineError(f"must be a non-negative integer, not {value}", name)
    return value


def _score(obj: dict[str, Any]) -> float | None:
    value = _number(obj, "score")
    if value is not None and not 0 <= value <= 1:
        raise InvalidLineError(f"must be a probability in [0, 1], not {value}", "score")
    return None if value is None else float(value)


def _answer(obj: dict[str, Any]) -> str | None:
    """The candidate's canonical answer, from "completion" or "answer" (exactly one)."""
    if ("completion" in obj) == ("answer" in obj):
        raise InvalidLineError('needs exactly one of "completion" and "answer"')
    if "completion" in obj:
        completion = optional_text(obj, "completion")
        if completion is None:
            raise InvalidLineError("must be a string, not null", "completion")
        return extract_answer(completion)
    value = obj["answer"]
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        value = str(value)
    elif value is not None and not isinstance(value, str):
        raise InvalidLineError(
            f"must be a string, a number or null, not {json_type(value)}", "answer"
        )
    number = parse_number(value) if value is not None else None
    return canonical(number) if number is not None else None


def _candidate(obj: dict[str, Any], sample_index: int) -> EvalCandidate:
    calls, failures = _count(obj, "calc_calls"), _count(obj, "calc_failures")
    if failures is not None and (calls is None or failures > calls):
        raise InvalidLineError("must not exceed calc_calls", "calc_failures")
    return EvalCandidate(sample_index, _answer(obj), _score(obj), calls, failures)


def _check_score_presence(state: _FileState, scored: bool, line_no: int) -> None:
    """Every line has a score or none has: a mix would leave strategies half-informed."""
    if scored:
        state.scored_line = state.scored_line or line_no
    else:
        state.unscored_line = state.unscored_line or line_no
    if state.scored_line and state.unscored_line:
        if scored:
            problem = f"present, but line {state.unscored_line} has none"
        else:
            problem = f"missing, but line {state.scored_line} has one"
        raise InvalidLineError(f"{problem}; give every line a score or none", "score")


def _take_line(obj: dict[str, Any], line_no: int, state: _FileState) -> None:
    check_fields(obj, FIELDS)
    problem_id = _problem_id(obj)
    gold = gold_field(obj, "gold")
    if gold is None:
        raise InvalidLineError("missing", "gold")
    entry = state.problems.get(problem_id) or _Problem(gold[1], line_no)
    if gold[1] != entry.gold:
        raise InvalidLineError(
            f"{gold[1]} differs from {entry.gold} on line {entry.gold_line} "
            f"for problem {problem_id!r}",
            "gold",
        )
    cand = _candidate(obj, len(entry.candidates))
    _check_score_presence(state, cand.score is not None, line_no)
    entry.candidates.append(cand)
    state.problems[problem_id] = entry


def load_candidates(
    source: Source, *, max_line_bytes: int | None = None
) -> list[ProblemCandidates]:
    """Every problem's candidates (a path, or its lines); CandidateFileError on any bad line."""
    limit = get_settings().max_line_bytes if max_line_bytes is None else max_line_bytes
    state = _FileState()
    errors = ErrorCollector()
    for line_no, raw in numbered_lines(source, limit):
        try:
            obj = read_object(raw, line_no, max_line_bytes=limit)
            if obj is not None:
                _take_line(obj, line_no, state)
        except InvalidLineError as exc:
            errors.add(exc.at(line_no))
    if errors.count:
        raise CandidateFileError(errors.errors, errors.count)
    return [
        ProblemCandidates(pid, p.gold, tuple(p.candidates)) for pid, p in state.problems.items()
    ]
