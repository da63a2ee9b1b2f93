"""Tables of the registry. The schema is created and changed only by the migrations in
modelforge_registry/migrations; a test compares these classes with the migrated schema."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from modelforge_common.errors import FieldViolation, InvalidArgument

# Deterministic constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MODEL_ACTIVE = "active"
# Set before a model's files are moved away; such rows are hidden and finished by the startup sweep.
MODEL_DELETING = "deleting"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ModelRecord(Base):
    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("model_id"),
        UniqueConstraint("name"),
        UniqueConstraint("path"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    base_model: Mapped[str] = mapped_column(String(512), index=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    strategy: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(64), index=True)
    # Relative to the data dir, so the volume can be mounted elsewhere.
    path: Mapped[str] = mapped_column(String(1024))
    size_mb: Mapped[float] = mapped_column(Float)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    training_params: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    job_id: Mapped[str] = mapped_column(String(128), index=True)
    adapter_type: Mapped[str] = mapped_column(String(16))
    file_sha256: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    # Final status of the job that produced the model ("" when it was not trained here).
    status: Mapped[str] = mapped_column(String(16), index=True, server_default="")
    # The Lineage message as JSON (proto field names); NULL when none was recorded.
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class DatasetRecord(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("filename"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    filename: Mapped[str] = mapped_column(String(255))
    # Relative to the data dir.
    path: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    num_examples: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    fields: Mapped[list[str]] = mapped_column(JSON)
    formats: Mapped[list[str]] = mapped_column(JSON)
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # Format field -> column; None when the rows already have a known shape.
    column_mapping: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    # Where the rows came from (format, original file or Hub id/config/split/revision/sha).
    source: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)


class SessionRecord(Base):
    __tablename__ = "sessions"

    session_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    selected_model: Mapped[str] = mapped_column(String(512))
    is_custom_model: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobRecord(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("job_id"), UniqueConstraint("idempotency_key"))

    # Insertion order: breaks ties between jobs queued in the same instant.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)
    # NULL when the caller gave none: unique constraints let NULLs repeat.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(String(64))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    owner: Mapped[str] = mapped_column(String(255))
    replica: Mapped[str] = mapped_column(String(255))
    checkpoint: Mapped[str] = mapped_column(String(1024))
    progress: Mapped[float] = mapped_column(Float)
    last_seq: Mapped[int] = mapped_column(BigInteger)


def check_text(record: type[Base], what: str, values: Mapping[str, str]) -> None:
    """Raises InvalidArgument for text a string column cannot hold: PostgreSQL refuses NUL
    characters and values longer than the column, and that is the caller's mistake, not INTERNAL."""
    problems = []
    for column, value in values.items():
        limit = getattr(record.__table__.c[column].type, "length", None)
        if "\x00" in value:
            problems.append(FieldViolation(column, "must not contain NUL characters"))
        elif limit is not None and len(value) > limit:
            problems.append(FieldViolation(column, f"must be at most {limit} characters"))
    if problems:
        raise InvalidArgument(f"Invalid {what}: " + "; ".join(f"{p.field} {p.description}" for p in problems), problems)
