"""Tasks to enqueue once the transaction that wrote them commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from verisolve.db.base import Base, TimestampMixin


class OutboxMessage(TimestampMixin, Base):
    """A task message written with the data it refers to, drained by the relay."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.UniqueConstraint("dedupe_key"),
        sa.Index("ix_outbox_unsent", "sent_at", "id"),
    )

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True
    )
    task: Mapped[str] = mapped_column(sa.String(128))
    queue: Mapped[str] = mapped_column(sa.String(64))
    payload: Mapped[dict[str, Any]]
    dedupe_key: Mapped[str] = mapped_column(sa.String(256))
    attempts: Mapped[int] = mapped_column(default=0)
    sent_at: Mapped[datetime | None]
