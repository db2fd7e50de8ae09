"""A job's answers as plain rows, for files, the CLI and the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from verisolve.tables import Job, Problem, Selection


def answer_rows(
    session: Session, job: Job, strategy: str | None = None
) -> Iterator[dict[str, Any]]:
    """One row per problem: id, answer, strategy, confidence, and correct when gold is known."""
    chosen = strategy or job.strategy
    sel = aliased(Selection)
    query = (
        sa.select(
            Problem.external_id,
            Problem.gold,
            Problem.status,
            sel.answer,
            sel.confidence,
            sel.correct,
        )
        .outerjoin(sel, (sel.problem_id == Problem.id) & (sel.strategy == chosen))
        .where(Problem.job_id == job.id)
        .order_by(Problem.id)
        .execution_options(yield_per=1000)
    )
    for external_id, gold, status, answer, confidence, correct in session.execute(query):
        row: dict[str, Any] = {
            "id": external_id,
            "answer": answer,
            "strategy": chosen,
            "confidence": confidence,
        }
        if status != "done":
            row["status"] = status  # not answered yet: no correctness to report
        elif gold is not None:
            row["correct"] = bool(correct)
        yield row
