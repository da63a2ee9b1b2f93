"""SessionStore against SQLite and PostgreSQL: default sessions and partial upserts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from modelforge_common.errors import InvalidArgument
from modelforge_registry.app import Registry
from modelforge_registry.domain import SessionState, SessionUpdate


def test_an_unknown_session_is_empty(registry: Registry) -> None:
    assert registry.sessions.get("client-1") == SessionState(session_id="client-1")
    assert registry.sessions.get("") == SessionState(session_id="default")


def test_update_changes_only_the_given_fields(registry: Registry) -> None:
    created = registry.sessions.update("c1", SessionUpdate(task="summarization"))
    assert (created.task, created.selected_model, created.is_custom_model) == ("summarization", "", False)
    assert created.updated_at is not None

    changed = registry.sessions.update("c1", SessionUpdate(selected_model="org/m", is_custom_model=True))
    assert (changed.task, changed.selected_model, changed.is_custom_model) == ("summarization", "org/m", True)
    assert changed.updated_at is not None and changed.updated_at >= created.updated_at

    cleared = registry.sessions.update("c1", SessionUpdate(task="", is_custom_model=False))
    assert (cleared.task, cleared.selected_model, cleared.is_custom_model) == ("", "org/m", False)
    assert registry.sessions.get("c1") == cleared
    assert registry.sessions.get("c2") == SessionState(session_id="c2")


def test_concurrent_first_updates_merge(registry: Registry) -> None:
    changes = [SessionUpdate(task="text-generation"), SessionUpdate(selected_model="org/m"),
               SessionUpdate(is_custom_model=True)] * 3
    with ThreadPoolExecutor(max_workers=9) as pool:
        list(pool.map(lambda change: registry.sessions.update("shared", change), changes))
    state = registry.sessions.get("shared")
    assert (state.task, state.selected_model, state.is_custom_model) == ("text-generation", "org/m", True)


def test_text_the_columns_cannot_hold_is_invalid(registry: Registry) -> None:
    with pytest.raises(InvalidArgument) as info:
        registry.sessions.update("x" * 300, SessionUpdate(task="t"))
    assert [v.field for v in info.value.violations] == ["session_id"]
    with pytest.raises(InvalidArgument) as info:
        registry.sessions.get("a\x00b")
    with pytest.raises(InvalidArgument) as info:
        registry.sessions.update("c", SessionUpdate(task="t" * 65, selected_model="m\x00"))
    assert [v.field for v in info.value.violations] == ["task", "selected_model"]
