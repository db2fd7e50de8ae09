"""A registered model directory (generator or verifier)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from verisolve.db.base import Base, TimestampMixin


class ModelArtifact(TimestampMixin, Base):
    """A model known to the registry, by unique name."""

    __tablename__ = "model_artifacts"
    __table_args__ = (
        sa.UniqueConstraint("name"),
        sa.CheckConstraint("kind IN ('generator', 'verifier')", name="kind_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.String(256))
    path: Mapped[str] = mapped_column(sa.Text)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    manifest: Mapped[dict[str, Any]]
