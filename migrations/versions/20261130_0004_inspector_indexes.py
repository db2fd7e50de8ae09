"""inspector indexes: candidates without a parseable answer

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 15:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A partial index: the inspector's parse-failure filter reads only the unparsed candidates.
    op.create_index(
        "ix_candidates_unparsed",
        "candidates",
        ["problem_id"],
        unique=False,
        postgresql_where=sa.text("answer IS NULL"),
        sqlite_where=sa.text("answer IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_candidates_unparsed", table_name="candidates")
