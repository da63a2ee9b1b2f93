"""Model lineage and the columns GET /api/models filters on.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("status", sa.String(length=16), server_default="", nullable=False))
        batch.add_column(sa.Column("lineage", sa.JSON(), nullable=True))
    # Every model registered by a trainer before this revision came from a completed job.
    op.execute("UPDATE models SET status = 'completed' WHERE job_id <> ''")
    op.create_index(op.f("ix_models_status"), "models", ["status"])
    op.create_index(op.f("ix_models_base_model"), "models", ["base_model"])
    op.create_index(op.f("ix_models_strategy"), "models", ["strategy"])
    op.create_index(op.f("ix_models_provider"), "models", ["provider"])


def downgrade() -> None:
    op.drop_index(op.f("ix_models_provider"), table_name="models")
    op.drop_index(op.f("ix_models_strategy"), table_name="models")
    op.drop_index(op.f("ix_models_base_model"), table_name="models")
    op.drop_index(op.f("ix_models_status"), table_name="models")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("lineage")
        batch.drop_column("status")
