"""An API key of the submission service: stored as a digest, owned by a tenant."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from verisolve.db.base import Base, TimestampMixin


class ApiKey(TimestampMixin, Base):
    """One key; the token itself is shown once and never stored."""

    __tablename__ = "api_keys"
    __table_args__ = (sa.UniqueConstraint("key_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(sa.String(128), index=True)
    name: Mapped[str] = mapped_column(sa.String(256), default="")
    # The token's first characters, so a user can tell keys apart in `verisolve keys list`.
    prefix: Mapped[str] = mapped_column(sa.String(16))
    key_hash: Mapped[str] = mapped_column(sa.String(64))  # sha256 hex of the token
    revoked_at: Mapped[datetime | None]
