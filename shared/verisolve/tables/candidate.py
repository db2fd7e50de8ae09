"""A sampled solution of a problem, with its verifier score."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from verisolve.db.base import Base, TimestampMixin

if TYPE_CHECKING:
    from verisolve.tables.problem import Problem


class Candidate(TimestampMixin, Base):
    """One candidate; (problem, sample_index) is its natural key."""

    __tablename__ = "candidates"
    __table_args__ = (
        sa.UniqueConstraint("problem_id", "sample_index"),
        # The inspector's "parse failures" filter: few rows, found without reading the rest.
        sa.Index(
            "ix_candidates_unparsed",
            "problem_id",
            postgresql_where=sa.text("answer IS NULL"),
            sqlite_where=sa.text("answer IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    problem_id: Mapped[int] = mapped_column(sa.ForeignKey("problems.id", ondelete="CASCADE"))
    sample_index: Mapped[int]
    text: Mapped[str] = mapped_column(sa.Text)
    answer: Mapped[str | None] = mapped_column(sa.String(64))
    n_tokens: Mapped[int]
    finish_reason: Mapped[str] = mapped_column(sa.String(16))
    calc_calls: Mapped[int] = mapped_column(default=0)
    calc_failures: Mapped[int] = mapped_column(default=0)
    gen_seconds: Mapped[float] = mapped_column(default=0.0)
    score: Mapped[float | None]
    token_scores: Mapped[list[Any] | None]
    verifier: Mapped[str | None] = mapped_column(sa.String(256))

    problem: Mapped[Problem] = relationship(back_populates="candidates")
