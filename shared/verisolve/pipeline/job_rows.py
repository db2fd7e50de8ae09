"""A job's progress counts and its candidates as rows, read in batches (answers: results.py).

The API streams these rows as NDJSON and `verisolve results` writes the same rows to a file, so
a result file looks the same whether it came from the service or from the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.tables import Candidate, Problem, ProblemStatus

BATCH_ROWS = 1000  # rows per round trip; on PostgreSQL a server-side cursor streams them


def problem_counts(session: Session, job_id: int) -> dict[str, int]:
    """How many of a job's problems are in each status (every status named, zero included)."""
    counts = dict.fromkeys((s.value for s in ProblemStatus), 0)
    rows = session.execute(
        sa.select(Problem.status, sa.func.count())
        .where(Problem.job_id == job_id)
        .group_by(Problem.status)
    )
    for status, count in rows:
        counts[status] = int(count)
    return counts


def candidate_rows(
    session: Session, job_id: int, batch_rows: int = BATCH_ROWS
) -> Iterator[dict[str, Any]]:
    """Every candidate of a job, by problem (upload order) and sample index."""
    query = (
        sa.select(
            Problem.external_id,
            Candidate.sample_index,
            Candidate.text,
            Candidate.answer,
            Candidate.score,
            Candidate.n_tokens,
            Candidate.finish_reason,
            Candidate.calc_calls,
            Candidate.calc_failures,
        )
        .join(Candidate, Candidate.problem_id == Problem.id)
        .where(Problem.job_id == job_id)
        .order_by(Problem.id, Candidate.sample_index)
        .execution_options(yield_per=batch_rows)
    )
    for row in session.execute(query):
        yield {
            "id": row.external_id,
            "sample_index": row.sample_index,
            "text": row.text,
            "answer": row.answer,
            "score": row.score,
            "n_tokens": row.n_tokens,
            "finish_reason": row.finish_reason,
            "calc_calls": row.calc_calls,
            "calc_failures": row.calc_failures,
        }


def ndjson_lines(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """Each row as one line of JSON."""
    for row in rows:
        yield json.dumps(row, ensure_ascii=False).encode() + b"\n"
