"""The ``runs`` table as servers created it before migrations existed.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("workflow_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("outputs", sa.JSON),
        sa.Column("error", sa.JSON),
        sa.Column("run_id", sa.String(32)),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("cost_usd", sa.Float),
        sa.Column("usage", sa.JSON),
        sa.Column("duration_ms", sa.Float),
        sa.Column("nodes", sa.JSON),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
    )
    op.create_index("ix_runs_workflow_created", "runs", ["workflow", "created_at"])
    op.create_index("ix_runs_status", "runs", ["status"])


def downgrade() -> None:
    op.drop_table("runs")
