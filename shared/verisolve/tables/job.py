"""A job: one problem set solved with one generator, verifier and sampling setup."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from verisolve.db.base import Base, TimestampMixin

if TYPE_CHECKING:
    from verisolve.tables.problem import Problem


class JobStatus(StrEnum):
    """Where a job stands."""

    PENDING = "pending"  # created; problems may still be added
    RUNNING = "running"  # enqueued or being worked on
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Job(TimestampMixin, Base):
    """A job and its parameters; counters are updated with the rows they count."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint("n_samples > 0", name="n_samples_positive"),
        sa.CheckConstraint("max_new_tokens > 0", name="max_new_tokens_positive"),
        sa.CheckConstraint("temperature >= 0", name="temperature_non_negative"),
        sa.CheckConstraint("top_p > 0 AND top_p <= 1", name="top_p_range"),
        # One job per tenant and key, even when requests with the key race each other.
        sa.UniqueConstraint("owner", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(128), index=True, default="local")
    name: Mapped[str] = mapped_column(sa.String(256), default="")
    # Digest of parameters and problems: `verisolve solve` finds the job to resume by it.
    fingerprint: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    # The API's idempotency key: the same key again returns this job.
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16), index=True, default=JobStatus.PENDING)
    generator: Mapped[str] = mapped_column(sa.String(256))
    verifier: Mapped[str | None] = mapped_column(sa.String(256))
    n_samples: Mapped[int]
    temperature: Mapped[float]
    top_p: Mapped[float] = mapped_column(default=1.0)
    top_k: Mapped[int] = mapped_column(default=0)
    max_new_tokens: Mapped[int]
    seed: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    strategy: Mapped[str] = mapped_column(sa.String(32))
    vote_k: Mapped[int] = mapped_column(default=5)
    n_problems: Mapped[int] = mapped_column(default=0)
    n_done: Mapped[int] = mapped_column(default=0)
    metrics: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    problems: Mapped[list[Problem]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )
