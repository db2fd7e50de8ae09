"""Reading and validating problem files (verisolve.problems)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verisolve.jsonl import MAX_ERRORS, LineError
from verisolve.problems import (
    MAX_ID_CHARS,
    Limits,
    ProblemFileError,
    ProblemIn,
    load_problems,
    validate_line,
)

GOOD = b'{"question": "How many?"}'


def _errors(lines: list[bytes], **limits: int) -> list[str]:
    with pytest.raises(ProblemFileError) as info:
        load_problems(lines, **limits)
    return [str(error) for error in info.value.errors]


@pytest.mark.parametrize(
    ("answer_json", "gold_raw", "gold"),
    [
        ('"3 + 4 = <<3+4=7>>7\\n#### 7"', "3 + 4 = <<3+4=7>>7\n#### 7", "7"),
        ('"#### 1,200"', "#### 1,200", "1200"),
        ('"Two left.\\nA: 2"', "Two left.\nA: 2", "2"),
        ('"$2.50"', "$2.50", "2.5"),
        ('"-3/4"', "-3/4", "-0.75"),
        ("18", "18", "18"),
        ("2.50", "2.50", "2.5"),
        ("1e2", "100", "100"),
        ("1.5E3", "1500", "1500"),
        ("0.0000001", "0.0000001", "0.0000001"),
        ("-2.5e-1", "-0.25", "-0.25"),
        ("null", None, None),
    ],
)
def test_gold_answers(answer_json: str, gold_raw: str | None, gold: str | None) -> None:
    line = f'{{"question": "Q", "answer": {answer_json}}}'
    (problem,) = load_problems([line])
    assert (problem.gold_raw, problem.gold) == (gold_raw, gold)


def test_fields_and_default_ids() -> None:
    lines = [
        b'{"question": "  First?  ", "answer": "4"}\n',
        b"\n",  # blank lines are skipped but still numbered
        b'{"question": "Second?", "id": "p-2"}\r\n',
        b'{"question": "Third?", "id": 41}',
        b'{"question": "Fourth?", "id": null}',
        b"   \t ",
    ]
    assert load_problems(lines) == [
        ProblemIn("1", "First?", "4", "4", 1),
        ProblemIn("p-2", "Second?", None, None, 3),
        ProblemIn("41", "Third?", None, None, 4),
        ProblemIn("5", "Fourth?", None, None, 5),
    ]


def test_text_lines_and_byte_order_mark() -> None:
    (from_text,) = load_problems(['\ufeff{"question": "Q\u00e9?"}\n'])
    (from_bytes,) = load_problems(['\ufeff{"question": "Q\u00e9?"}\n'.encode()])
    assert from_text == from_bytes == ProblemIn("1", "Qé?", None, None, 1)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"\xff\xfe{}", "line 1: not valid UTF-8 (byte 0xff at column 1)"),
        (b'{"question": "caf\xe9"}', "line 1: not valid UTF-8 (byte 0xe9 at column 18)"),
        (b'{"question": "Q"', "line 1: not valid JSON: Expecting ',' delimiter (column 17)"),
        # As a file reads it: the line's end is not the error's place.
        (b'{"question": "Q"\n', "line 1: not valid JSON: Expecting ',' delimiter (column 17)"),
        (b'{"question": "Q"\r\n', "line 1: not valid JSON: Expecting ',' delimiter (column 17)"),
        (b"question: Q", "line 1: not valid JSON: Expecting value (column 1)"),
        (b'{"question": NaN}', "line 1: not valid JSON: NaN is not a number JSON allows"),
        (b"[" * 100_000, "line 1: not valid JSON: nested too deeply"),
        (b'["Q"]', "line 1: must be a JSON object, not an array"),
        (b'"Q"', "line 1: must be a JSON object, not a string"),
        (b"7", "line 1: must be a JSON object, not a number"),
        (b'{"question": "Q", "question": "R"}', "line 1: question: appears twice in one object"),
        (b'{"qustion": "Q"}', "line 1: qustion: unknown field (allowed: question, answer, id)"),
        (b'{"answer": "4"}', "line 1: question: missing"),
        (b'{"question": null}', "line 1: question: must be a string, not null"),
        (b'{"question": 7}', "line 1: question: must be a string, not a number"),
        (b'{"question": ["Q"]}', "line 1: question: must be a string, not an array"),
        (b'{"question": ""}', "line 1: question: empty"),
        (b'{"question": " \\n\\t"}', "line 1: question: empty"),
        (b'{"question": "Q\\u0000"}', "line 1: question: contains a NUL character"),
        (
            b'{"question": "Q\\ud800"}',
            "line 1: question: contains an unpaired surrogate (\\ud800-\\udfff)",
        ),
        (
            b'{"question": "Q", "answer": true}',
            "line 1: answer: must be a string or a number, not a boolean",
        ),
        (
            b'{"question": "Q", "answer": {}}',
            "line 1: answer: must be a string or a number, not an object",
        ),
        (
            b'{"question": "Q", "answer": ""}',
            "line 1: answer: empty (leave the field out when there is no gold answer)",
        ),
        (
            b'{"question": "Q", "answer": "about seven"}',
            "line 1: answer: not a number, nor a solution whose last line is '#### N' (or 'A: N')",
        ),
        (
            b'{"question": "Q", "answer": "#### 7\\nthen more"}',
            "line 1: answer: not a number, nor a solution whose last line is '#### N' (or 'A: N')",
        ),
        (
            b'{"question": "Q", "id": true}',
            "line 1: id: must be a string or an integer, not a boolean",
        ),
        (
            b'{"question": "Q", "id": 1.5}',
            "line 1: id: must be a string or an integer, not a number",
        ),
        (b'{"question": "Q", "id": ""}', "line 1: id: empty"),
        (
            b'{"question": "Q", "id": "' + b"x" * (MAX_ID_CHARS + 1) + b'"}',
            f"line 1: id: {MAX_ID_CHARS + 1} characters, over the limit of {MAX_ID_CHARS}",
        ),
    ],
)
def test_each_error_kind(line: bytes, error: str) -> None:
    assert _errors([line]) == [error]


def test_question_length_limit_from_settings_and_parameter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    long = json.dumps({"question": "x" * 8001}).encode()
    assert _errors([long]) == ["line 1: question: 8,001 characters, over the limit of 8,000"]
    assert load_problems([long], max_question_chars=9000)[0].question == "x" * 8001
    assert _errors([GOOD], max_question_chars=5) == [
        "line 1: question: 9 characters, over the limit of 5"
    ]
    monkeypatch.setenv("VERISOLVE_MAX_QUESTION_CHARS", "3")
    from verisolve.settings import get_settings

    get_settings.cache_clear()
    assert _errors([GOOD]) == ["line 1: question: 9 characters, over the limit of 3"]


def test_line_byte_limit() -> None:
    line = json.dumps({"question": "x" * 100}).encode()
    assert _errors([line], max_line_bytes=50) == [
        f"line 1: line is {len(line)} bytes, over the limit of 50"
    ]


def test_a_json_number_past_fifty_digits_is_no_answer() -> None:
    assert _errors([b'{"question": "Q", "answer": 1e400}']) == [
        "line 1: answer: a number over 50 digits is not an answer"
    ]


def test_an_overlong_line_in_a_file_is_never_read_whole(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "huge.jsonl"
    with path.open("wb") as f:
        f.write(GOOD + b"\n")
        f.write(b'{"question": "' + b"x" * 30_000_000)  # 30 MB, no newline
    tracemalloc.start()
    try:
        errors = _errors_of(path, max_line_bytes=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert errors == ["line 2: line is 30,000,014 bytes, over the limit of 1,000"]
    assert peak < 8 * 1024 * 1024


def _errors_of(path: Path, **limits: int) -> list[str]:
    with pytest.raises(ProblemFileError) as info:
        load_problems(path, **limits)
    return [str(error) for error in info.value.errors]


@pytest.mark.parametrize(
    ("lines", "errors"),
    [
        (  # an explicit id taken again
            [b'{"question": "Q", "id": "a"}', b'{"question": "Q", "id": "a"}'],
            ["line 2: id: 'a' is already the id of line 1"],
        ),
        (  # an integer id and its string are the same id
            [b'{"question": "Q", "id": 7}', b'{"question": "Q", "id": "7"}'],
            ["line 2: id: '7' is already the id of line 1"],
        ),
        (  # an explicit id first, a line's default id after it
            [b'{"question": "Q", "id": "2"}', GOOD],
            [
                "line 2: id: '2' is already the id of line 1 "
                "(lines without an id take their line number as id)"
            ],
        ),
        (  # a default id first, an explicit id after it
            [GOOD, b'{"question": "Q", "id": "1"}'],
            [
                "line 2: id: '1' is already the id of line 1 "
                "(lines without an id take their line number as id)"
            ],
        ),
        (  # a line with another error still holds its id
            [b'{"question": "", "id": "a"}', b'{"question": "Q", "id": "a"}'],
            ["line 1: question: empty", "line 2: id: 'a' is already the id of line 1"],
        ),
    ],
)
def test_duplicate_ids(lines: list[bytes], errors: list[str]) -> None:
    assert _errors(lines) == errors


def test_all_or_nothing_reports_every_bad_line() -> None:
    lines = [GOOD, b"{", GOOD, b'{"question": ""}', b"", b'{"question": 1}', GOOD]
    with pytest.raises(ProblemFileError) as info:
        load_problems(lines)
    assert info.value.errors == [
        LineError(
            2, "not valid JSON: Expecting property name enclosed in double quotes (column 2)"
        ),
        LineError(4, "empty", "question"),
        LineError(6, "must be a string, not a number", "question"),
    ]
    assert info.value.n_errors == 3
    assert "3 bad line(s); first: line 2: not valid JSON" in str(info.value)


def test_error_list_is_capped_but_counted() -> None:
    lines = [b"{"] * (MAX_ERRORS + 234)
    with pytest.raises(ProblemFileError) as info:
        load_problems(lines)
    assert len(info.value.errors) == MAX_ERRORS
    assert info.value.n_errors == MAX_ERRORS + 234
    assert info.value.errors[-1].line_no == MAX_ERRORS


def test_streaming_validation_matches_the_file_loader() -> None:
    lines = [GOOD, b"", b'{"question": "Q", "id": "1"}', b'{"question": "Q", "id": "x"}']
    seen: dict[str, int] = {}
    limits = Limits.resolve()
    results = [validate_line(raw, n, seen, limits) for n, raw in enumerate(lines, start=1)]
    assert results[0] == ProblemIn("1", "How many?", None, None, 1)
    assert results[1] is None
    assert isinstance(results[2], LineError)
    assert str(results[2]).startswith("line 3: id: '1' is already the id of line 1")
    assert results[3] == ProblemIn("x", "Q", None, None, 4)
    assert seen == {"1": 1, "x": 4}


def test_reads_a_path(tmp_path: Path) -> None:
    path = tmp_path / "problems.jsonl"
    path.write_bytes(b'{"question": "A?", "answer": "1"}\n\n{"question": "B?"}\n')
    assert [p.external_id for p in load_problems(path)] == ["1", "3"]
    assert [p.external_id for p in load_problems(str(path))] == ["1", "3"]


@pytest.mark.parametrize(("name", "count"), [("train.jsonl", 7473), ("test.jsonl", 1319)])
def test_gsm8k_files_load_as_they_are(gsm8k_dir: Path, name: str, count: int) -> None:
    problems = load_problems(gsm8k_dir / name)
    assert len(problems) == count
    assert all(problem.gold is not None for problem in problems)
    assert [problem.external_id for problem in problems[:3]] == ["1", "2", "3"]
    assert len({problem.external_id for problem in problems}) == count
