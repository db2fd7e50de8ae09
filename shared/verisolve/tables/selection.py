"""The answer a selection strategy chose for a problem."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from verisolve.db.base import Base, TimestampMixin

if TYPE_CHECKING:
    from verisolve.tables.problem import Problem


class Selection(TimestampMixin, Base):
    """One per problem and strategy."""

    __tablename__ = "selections"
    __table_args__ = (sa.UniqueConstraint("problem_id", "strategy"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    problem_id: Mapped[int] = mapped_column(sa.ForeignKey("problems.id", ondelete="CASCADE"))
    strategy: Mapped[str] = mapped_column(sa.String(32))
    answer: Mapped[str | None] = mapped_column(sa.String(64))
    sample_index: Mapped[int | None]
    confidence: Mapped[float | None]
    correct: Mapped[bool | None]

    problem: Mapped[Problem] = relationship(back_populates="selections")
