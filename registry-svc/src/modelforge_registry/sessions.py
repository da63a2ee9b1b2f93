"""v1 wizard state (task, selected model) per client id, so any gateway replica can answer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from modelforge_registry.domain import SessionState, SessionUpdate
from modelforge_registry.store import Database, SessionRecord, as_utc, check_text, utc_now

# A client that sends no id shares this one, as the single-user v1 API did.
DEFAULT_SESSION_ID = "default"


def _session_id(raw: str) -> str:
    session_id = raw or DEFAULT_SESSION_ID
    check_text(SessionRecord, "session", {"session_id": session_id})
    return session_id


class SessionStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def get(self, raw_id: str) -> SessionState:
        """The stored session, or an empty one when the client has none yet."""
        session_id = _session_id(raw_id)
        with self.db.transaction() as session:
            record = session.get(SessionRecord, session_id)
            return self._state(record) if record is not None else SessionState(session_id=session_id)

    def update(self, raw_id: str, change: SessionUpdate) -> SessionState:
        """Creates or updates the session, changing only the fields given (one atomic upsert)."""
        session_id = _session_id(raw_id)
        given: dict[str, Any] = {
            name: value
            for name, value in (
                ("task", change.task),
                ("selected_model", change.selected_model),
                ("is_custom_model", change.is_custom_model),
            )
            if value is not None
        }
        check_text(SessionRecord, "session", {k: v for k, v in given.items() if isinstance(v, str)})
        now = utc_now()
        values = {"task": "", "selected_model": "", "is_custom_model": False, **given}
        dialect = postgresql if self.db.dialect == "postgresql" else sqlite
        statement = dialect.insert(SessionRecord).values(session_id=session_id, updated_at=now, **values)
        statement = statement.on_conflict_do_update(
            index_elements=[SessionRecord.session_id], set_={**given, "updated_at": now}
        )
        with self.db.transaction() as session:
            session.execute(statement)
            record = session.scalar(
                select(SessionRecord).where(SessionRecord.session_id == session_id).execution_options(
                    populate_existing=True
                )
            )
            assert record is not None
            return self._state(record)

    @staticmethod
    def _state(record: SessionRecord) -> SessionState:
        return SessionState(
            session_id=record.session_id,
            task=record.task,
            selected_model=record.selected_model,
            is_custom_model=record.is_custom_model,
            updated_at=as_utc(record.updated_at),
        )
