"""A problem of a job, with the counters that drive it through the stages."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from verisolve.db.base import Base, TimestampMixin

if TYPE_CHECKING:
    from verisolve.tables.candidate import Candidate
    from verisolve.tables.job import Job
    from verisolve.tables.selection import Selection


class ProblemStatus(StrEnum):
    """The stage a problem waits for; exactly one transaction moves it to the next."""

    PENDING = "pending"  # waiting for its candidates
    GENERATED = "generated"  # candidates written, waiting for scores
    SCORED = "scored"  # every candidate scored, waiting for selection
    DONE = "done"
    FAILED = "failed"


class Problem(TimestampMixin, Base):
    """One question (and its gold answer, when known)."""

    __tablename__ = "problems"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "external_id"),
        sa.Index("ix_problems_job_id_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(sa.String(256))
    line_no: Mapped[int | None]
    question: Mapped[str] = mapped_column(sa.Text)
    gold_raw: Mapped[str | None] = mapped_column(sa.Text)
    gold: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(
        sa.String(16), default=ProblemStatus.PENDING, server_default=ProblemStatus.PENDING.value
    )
    n_generated: Mapped[int] = mapped_column(default=0, server_default="0")
    n_scored: Mapped[int] = mapped_column(default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[datetime] = mapped_column(
        server_default=sa.func.now(), onupdate=sa.func.now()
    )

    job: Mapped[Job] = relationship(back_populates="problems")
    candidates: Mapped[list[Candidate]] = relationship(
        back_populates="problem",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Candidate.sample_index",
    )
    selections: Mapped[list[Selection]] = relationship(
        back_populates="problem", cascade="all, delete-orphan", passive_deletes=True
    )
