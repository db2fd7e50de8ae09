"""Reading user JSONL files line by line, with errors that name the line and the field.

Lines are numbered from 1 as a text editor shows them. Blank lines (only whitespace) are
skipped: a trailing newline or a spacer line is no error, and numbering still counts them.
Each line is decoded on its own, so bad UTF-8 is reported on its line; a UTF-8 byte order
mark on line 1 is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

# A path to a JSONL file, or its lines (bytes as read from a file or an upload, or text).
Source = str | os.PathLike[str] | Iterable[bytes | str]

MAX_ERRORS = 1000  # errors kept for display; all are counted
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class LineError:
    """Why one line is rejected."""

    line_no: int
    reason: str
    field: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line_no}: {self.field}: " if self.field else f"line {self.line_no}: "
        return where + self.reason


class InvalidLineError(Exception):
    """Raised by the readers of one line; the caller turns it into a LineError."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field

    def at(self, line_no: int) -> LineError:
        """The error, placed on its line."""
        return LineError(line_no, self.reason, self.field)


class JsonlFileError(ValueError):
    """A file with bad lines: the first MAX_ERRORS of them, and how many there were."""

    def __init__(self, errors: Sequence[LineError], n_errors: int | None = None) -> None:
        self.errors = list(errors)
        self.n_errors = len(self.errors) if n_errors is None else n_errors
        first = f"; first: {self.errors[0]}" if self.errors else ""
        super().__init__(f"{self.n_errors} bad line(s){first}")


@dataclass(slots=True)
class ErrorCollector:
    """Keeps the first MAX_ERRORS errors and counts every one."""

    errors: list[LineError] = field(default_factory=list)
    count: int = 0

    def add(self, error: LineError) -> None:
        """Record one bad line."""
        self.count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """A line over the byte limit, measured but never held: only its size is kept."""

    size: int


RawLine = bytes | str | OverlongLine
_DRAIN_CHUNK = 1 << 20


def numbered_lines(
    source: Source, max_line_bytes: int | None = None
) -> Iterator[tuple[int, RawLine]]:
    """(line number, raw line) for a path or for lines already in memory.

    From a file with `max_line_bytes`, a longer line is read in bounded pieces and comes back as
    an OverlongLine, so a huge line without a newline never sits in memory whole.
    """
    if not isinstance(source, str | os.PathLike):
        yield from enumerate(source, start=1)
        return
    with Path(source).open("rb") as f:
        if max_line_bytes is None:
            yield from enumerate(f, start=1)
            return
        line_no = 0
        while raw := f.readline(max_line_bytes + 1):
            line_no += 1
            yield line_no, raw if len(raw) <= max_line_bytes else _drain(f, raw)


def _drain(f: Any, start: bytes) -> OverlongLine:
    """Skip the rest of an overlong line, counting its bytes."""
    size = len(start)
    piece = start
    while piece and not piece.endswith(b"\n"):
        piece = f.readline(_DRAIN_CHUNK)
        size += len(piece)
    return OverlongLine(size)


def read_object(raw: RawLine, line_no: int, *, max_line_bytes: int) -> dict[str, Any] | None:
    """The JSON object on one line, None for a blank line; raises InvalidLineError."""
    if isinstance(raw, OverlongLine):
        raise InvalidLineError(f"line is {raw.size:,} bytes, over the limit of {max_line_bytes:,}")
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_line_bytes:
        raise InvalidLineError(f"line is {size:,} bytes, over the limit of {max_line_bytes:,}")
    text = _decode(raw)
    if line_no == 1:
        text = text.removeprefix(_BOM)
    if not text.strip():
        return None
    try:
        value = json.loads(
            # Without the line's end, an error at its end is at its last column, not line 2's 1st.
            text.rstrip("\r\n"),
            object_pairs_hook=_unique_keys,
            parse_float=Decimal,
            parse_constant=_refuse_constant,
        )
    except json.JSONDecodeError as exc:
        raise InvalidLineError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise InvalidLineError("not valid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer over Python's digit limit
        raise InvalidLineError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidLineError(f"must be a JSON object, not {json_type(value)}")
    return value


def check_fields(obj: dict[str, Any], allowed: Sequence[str]) -> None:
    """Refuse fields a reader would silently ignore (a typo such as "qustion")."""
    for name in obj:
        if name not in allowed:
            raise InvalidLineError(f"unknown field (allowed: {', '.join(allowed)})", name)


def optional_text(obj: dict[str, Any], name: str) -> str | None:
    """An optional string field; absent or null gives None."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidLineError(f"must be a string, not {json_type(value)}", name)
    check_storable(value, name)
    return value


def required_text(obj: dict[str, Any], name: str) -> str:
    """A required string field (it may be empty: callers decide)."""
    if name not in obj:
        raise InvalidLineError("missing", name)
    value = optional_text(obj, name)
    if value is None:
        raise InvalidLineError("must be a string, not null", name)
    return value


def check_storable(value: str, name: str) -> None:
    """Refuse text a database cannot store (PostgreSQL rejects NUL; UTF-8 rejects surrogates)."""
    if "\x00" in value:
        raise InvalidLineError("contains a NUL character", name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidLineError("contains an unpaired surrogate (\\ud800-\\udfff)", name) from None


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _decode(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        raise InvalidLineError(
            f"not valid UTF-8 (byte 0x{byte:02x} at column {exc.start + 1})"
        ) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise InvalidLineError("appears twice in one object", key)
        obj[key] = value
    return obj


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidLineError(f"not valid JSON: {name} is not a number JSON allows")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object a line to `path` whole or not at all; how many were written."""
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return count
