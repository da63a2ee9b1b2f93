"""v1 wizard state (task, selected model) per client id, so any gateway replica can answer."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from modelforge.v1 import registry_pb2
from modelforge_registry.store import Database, SessionRecord, as_utc, check_text, utc_now

# A client that sends no id shares this one, as the single-user v1 API did.
DEFAULT_SESSION_ID = "default"
# The optional fields of UpdateSessionRequest: each is changed only when the request carries it.
_CHANGEABLE: tuple[Literal["task", "selected_model", "is_custom_model"], ...] = (
    "task",
    "selected_model",
    "is_custom_model",
)


def _session_id(raw: str) -> str:
    session_id = raw or DEFAULT_SESSION_ID
    check_text(SessionRecord, "session", {"session_id": session_id})
    return session_id


class SessionStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def get(self, raw_id: str) -> registry_pb2.Session:
        """The stored session, or an empty one (no updated_at) when the client has none yet."""
        session_id = _session_id(raw_id)
        with self.db.transaction() as session:
            record = session.get(SessionRecord, session_id)
            return _session_of(record) if record is not None else registry_pb2.Session(session_id=session_id)

    def update(self, change: registry_pb2.UpdateSessionRequest) -> registry_pb2.Session:
        """Creates or updates change.session_id's session, changing only the fields the request
        carries (one atomic upsert)."""
        session_id = _session_id(change.session_id)
        given: dict[str, Any] = {name: getattr(change, name) for name in _CHANGEABLE if change.HasField(name)}
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
            return _session_of(record)


def _session_of(record: SessionRecord) -> registry_pb2.Session:
    session = registry_pb2.Session(
        session_id=record.session_id,
        task=record.task,
        selected_model=record.selected_model,
        is_custom_model=record.is_custom_model,
    )
    session.updated_at.FromDatetime(as_utc(record.updated_at))
    return session
