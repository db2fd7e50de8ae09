"""job idempotency key, unique per tenant

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 15:10:00.000000

API jobs kept their idempotency key in `fingerprint`, with no constraint, so racing requests made
several jobs for one key. The key gets its own column, unique per (owner, key); of the jobs that
share an old key, the newest keeps it (as the old lookup returned the newest).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# API jobs: keys are at most 64 characters of [A-Za-z0-9_.:-]; `solve` digests belong to "local".
_COPY_KEYS = """
    UPDATE jobs SET idempotency_key = fingerprint
    WHERE owner <> 'local' AND fingerprint IS NOT NULL AND id IN (
        SELECT max(id) FROM jobs WHERE owner <> 'local' AND fingerprint IS NOT NULL
        GROUP BY owner, fingerprint
    )
"""


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(length=64), nullable=True))
    op.execute(_COPY_KEYS)
    with op.batch_alter_table("jobs") as batch:
        batch.create_unique_constraint(
            op.f("uq_jobs_owner_idempotency_key"), ["owner", "idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("uq_jobs_owner_idempotency_key"), type_="unique")
        batch.drop_column("idempotency_key")
