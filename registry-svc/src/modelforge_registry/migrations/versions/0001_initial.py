"""Initial schema: models, datasets, sessions.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("base_model", sa.String(length=512), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("strategy", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size_mb", sa.Float(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("training_params", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("adapter_type", sa.String(length=16), nullable=False),
        sa.Column("file_sha256", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("model_id", name=op.f("uq_models_model_id")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
        sa.UniqueConstraint("path", name=op.f("uq_models_path")),
    )
    op.create_index(op.f("ix_models_task"), "models", ["task"])
    op.create_index(op.f("ix_models_job_id"), "models", ["job_id"])
    op.create_index(op.f("ix_models_created_at"), "models", ["created_at"])
    op.create_index(op.f("ix_models_state"), "models", ["state"])

    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("num_examples", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("formats", sa.JSON(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("filename", name=op.f("uq_datasets_filename")),
    )
    op.create_index(op.f("ix_datasets_uploaded_at"), "datasets", ["uploaded_at"])

    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("selected_model", sa.String(length=512), nullable=False),
        sa.Column("is_custom_model", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_sessions")),
    )


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_index(op.f("ix_datasets_uploaded_at"), table_name="datasets")
    op.drop_table("datasets")
    op.drop_index(op.f("ix_models_state"), table_name="models")
    op.drop_index(op.f("ix_models_created_at"), table_name="models")
    op.drop_index(op.f("ix_models_job_id"), table_name="models")
    op.drop_index(op.f("ix_models_task"), table_name="models")
    op.drop_table("models")
