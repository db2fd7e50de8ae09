"""Uploading problems: one NDJSON chunk validated line by line, then stored whole or not at all.

Line numbers are the file's: a chunk's first line is `line_offset + 1`, so lines without an id
get the same ids as when the whole file is read at once. A chunk sent again (a retry) stores
nothing twice: problems are keyed by id, and an id that comes back with a different line,
question or answer is an error, not a silent skip. PostgreSQL takes the rows by COPY.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.jsonl import ErrorCollector, LineError
from verisolve.pipeline.jobs import add_problems, check_pending, count_problems
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.stages import rowcount
from verisolve.problems import Limits, ProblemFileError, ProblemIn, parse_lines
from verisolve.tables import Job, Problem

LOOKUP_BATCH = 1000  # ids per IN (...) when looking for problems stored already


class ChunkRejectedError(ValueError):
    """A chunk with bad lines: nothing of it is stored."""

    def __init__(self, errors: Sequence[LineError], n_errors: int) -> None:
        self.errors = list(errors)
        self.n_errors = n_errors
        super().__init__(f"{n_errors:,} bad line(s); nothing of this chunk was stored")


@dataclass(frozen=True)
class Stored:
    """What a chunk did: problems received, newly stored, and already held."""

    received: int
    stored: int
    skipped: int


def parse_chunk(body: bytes, line_offset: int, limits: Limits) -> list[ProblemIn]:
    """Every problem of a chunk; ChunkRejectedError listing every bad line, or for no problem."""
    try:
        problems = parse_lines(enumerate(body.split(b"\n"), start=line_offset + 1), limits)
    except ProblemFileError as exc:
        raise ChunkRejectedError(exc.errors, exc.n_errors) from None
    if not problems:
        raise ChunkRejectedError([LineError(line_offset + 1, "the chunk holds no problem")], 1)
    return problems


def store_chunk(
    session: Session,
    job: Job,
    problems: Sequence[ProblemIn],
    limits: JobLimits,
    *,
    dry_run: bool = False,
) -> Stored:
    """Store the problems the job lacks; the caller holds the job's lock (see jobs.lock_job)."""
    check_pending(job)
    if session.get_bind().dialect.name == "postgresql":
        return _store_by_copy(session, job, problems, limits, dry_run)
    ids = [p.external_id for p in problems]
    known = _check_against_stored(problems, _stored_rows(session, job.id, ids))
    fresh = [p for p in problems if p.external_id not in known]
    if dry_run:
        limits.check_problems(job.n_problems + len(fresh))
        return Stored(len(problems), 0, len(known))
    stored = add_problems(session, job, fresh, limits)
    return Stored(len(problems), stored, len(problems) - stored)


def _stored_rows(session: Session, job_id: int, ids: Sequence[str]) -> Iterator[Sequence[Any]]:
    """(external id, line, question, gold) of the problems the job holds among `ids`."""
    for start in range(0, len(ids), LOOKUP_BATCH):
        yield from session.execute(
            sa.select(Problem.external_id, Problem.line_no, Problem.question, Problem.gold_raw)
            .where(Problem.job_id == job_id)
            .where(Problem.external_id.in_(ids[start : start + LOOKUP_BATCH]))
        )


def _check_against_stored(
    problems: Sequence[ProblemIn], stored: Iterable[Sequence[Any]]
) -> set[str]:
    """The ids stored already; ChunkRejectedError when one of them holds another problem."""
    by_id = {p.external_id: p for p in problems}
    known: set[str] = set()
    errors = ErrorCollector()
    for external_id, line_no, question, gold_raw in stored:
        new = by_id[external_id]
        known.add(external_id)
        if line_no != new.line_no:
            errors.add(_conflict(new, f"{external_id!r} is already the id of line {line_no}"))
        elif (question, gold_raw) != (new.question, new.gold_raw):
            errors.add(
                _conflict(new, "this line was stored before with another question or answer")
            )
    if errors.count:
        raise ChunkRejectedError(sorted(errors.errors, key=lambda e: e.line_no), errors.count)
    return known


def _conflict(problem: ProblemIn, reason: str) -> LineError:
    return LineError(problem.line_no, reason, "id")


def _store_by_copy(
    session: Session, job: Job, problems: Sequence[ProblemIn], limits: JobLimits, dry_run: bool
) -> Stored:
    """COPY the chunk into a temporary table; one join finds the ids stored already."""
    # A join, not `external_id IN (...)`: once psycopg prepares the statement, PostgreSQL may
    # plan that list as a filter over every problem of the job, at a cost of rows x ids.
    _copy_to_staging(session, problems)
    stored = session.execute(_STORED, {"job_id": job.id})
    known = _check_against_stored(problems, stored)
    limits.check_problems(job.n_problems + len(problems) - len(known))
    if dry_run or len(known) == len(problems):
        return Stored(len(problems), 0, len(known))
    inserted = rowcount(session.execute(_INSERT, {"job_id": job.id}))
    count_problems(session, job, inserted)
    return Stored(len(problems), inserted, len(problems) - inserted)


def _copy_to_staging(session: Session, problems: Sequence[ProblemIn]) -> None:
    session.execute(sa.text(_STAGING_DDL))
    driver = cast(psycopg.Connection[Any], session.connection().connection.driver_connection)
    statement = f"COPY {_STAGING} ({', '.join(_COLUMNS)}) FROM STDIN"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for p in problems:
            copy.write_row((p.external_id, p.line_no, p.question, p.gold_raw, p.gold))
    session.execute(sa.text(f"ANALYZE {_STAGING}"))  # temporary tables get no statistics else


_STAGING = "upload_staging"
_COLUMNS = ("external_id", "line_no", "question", "gold_raw", "gold")
_STAGING_DDL = f"""
    CREATE TEMPORARY TABLE {_STAGING} (
        external_id text NOT NULL, line_no integer, question text NOT NULL,
        gold_raw text, gold text
    ) ON COMMIT DROP
"""
_STORED = sa.text(f"""
    SELECT p.external_id, p.line_no, p.question, p.gold_raw
    FROM {_STAGING} s JOIN problems p ON p.job_id = :job_id AND p.external_id = s.external_id
""")
_INSERT = sa.text(f"""
    INSERT INTO problems (job_id, {", ".join(_COLUMNS)})
    SELECT :job_id, {", ".join(_COLUMNS)} FROM {_STAGING} ORDER BY line_no
    ON CONFLICT (job_id, external_id) DO NOTHING
""")
