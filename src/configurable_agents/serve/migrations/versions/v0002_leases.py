"""Leases: the replica that runs a record (``owner``) and until when its claim holds
(``lease_until``, renewed by its heartbeat; others fail the run once it has passed).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(64)))
        batch.add_column(sa.Column("lease_until", sa.DateTime))
    op.create_index("ix_runs_status_lease", "runs", ["status", "lease_until"])


def downgrade() -> None:
    op.drop_index("ix_runs_status_lease", "runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("owner")
