"""Persistence: the ORM tables, the engine and the schema migrations."""

from modelforge_registry.store.database import Database, alembic_config, as_utc, upgrade_to_head, utc_now
from modelforge_registry.store.orm import Base, DatasetRecord, JobRecord, ModelRecord, SessionRecord, check_text

__all__ = [
    "Base",
    "Database",
    "DatasetRecord",
    "JobRecord",
    "ModelRecord",
    "SessionRecord",
    "alembic_config",
    "as_utc",
    "check_text",
    "upgrade_to_head",
    "utc_now",
]
