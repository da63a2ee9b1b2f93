"""Engine, transactions and schema migrations for SQLite (local) and PostgreSQL (k8s).

Domain code is synchronous and runs in worker threads (asyncio.to_thread), so one engine with a
connection pool serves concurrent calls. On SQLite every transaction starts with BEGIN IMMEDIATE:
writers queue on the busy timeout instead of failing with "database is locked" when a read
transaction later tries to write.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any constant: replicas starting together take turns upgrading the schema.
_MIGRATION_LOCK_KEY = 7_310_551_223


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite gives back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN (pysqlite's own handling defers it past reads).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration built in code (no alembic.ini); the migrations ship in the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Brings the schema to the newest migration; a no-op when it is there already."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        command.upgrade(alembic_config(connection), "head")
    log.info("database schema is at the newest migration")


class Database:
    """One engine and a factory of transactional sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed when the block ends, rolled back on an exception."""
        with self._sessions.begin() as session:
            yield session

    def serialize(self, session: Session, topic: str) -> None:
        """Makes transactions on one topic (e.g. choosing a free name) take turns until commit.
        SQLite transactions already do (BEGIN IMMEDIATE); PostgreSQL takes an advisory lock."""
        if self.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(topic.encode())})

    def upgrade(self) -> None:
        upgrade_to_head(self.engine)

    def close(self) -> None:
        self.engine.dispose()
