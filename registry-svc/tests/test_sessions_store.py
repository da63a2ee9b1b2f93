"""SessionStore against SQLite and PostgreSQL: default sessions and partial upserts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from modelforge.v1.registry_pb2 import Session, UpdateSessionRequest
from modelforge_common.errors import InvalidArgument
from modelforge_registry.app import Registry


def test_an_unknown_session_is_empty(registry: Registry) -> None:
    assert registry.sessions.get("client-1") == Session(session_id="client-1")
    assert registry.sessions.get("") == Session(session_id="default")


def test_an_unsaved_session_has_no_timestamp(registry: Registry) -> None:
    assert not registry.sessions.get("c").HasField("updated_at")


def test_update_changes_only_the_fields_present(registry: Registry) -> None:
    # A field present with its default value (False) is a change; an absent one is not.
    registry.sessions.update(UpdateSessionRequest(session_id="c", task="t", is_custom_model=True))
    changed = registry.sessions.update(UpdateSessionRequest(session_id="c", is_custom_model=False))
    assert (changed.task, changed.selected_model, changed.is_custom_model) == ("t", "", False)


def test_update_changes_only_the_given_fields(registry: Registry) -> None:
    created = registry.sessions.update(UpdateSessionRequest(session_id="c1", task="summarization"))
    assert (created.task, created.selected_model, created.is_custom_model) == ("summarization", "", False)
    assert created.HasField("updated_at")

    changed = registry.sessions.update(
        UpdateSessionRequest(session_id="c1", selected_model="org/m", is_custom_model=True)
    )
    assert (changed.task, changed.selected_model, changed.is_custom_model) == ("summarization", "org/m", True)
    assert changed.HasField("updated_at")
    assert changed.updated_at.ToDatetime() >= created.updated_at.ToDatetime()

    cleared = registry.sessions.update(UpdateSessionRequest(session_id="c1", task="", is_custom_model=False))
    assert (cleared.task, cleared.selected_model, cleared.is_custom_model) == ("", "org/m", False)
    assert registry.sessions.get("c1") == cleared
    assert registry.sessions.get("c2") == Session(session_id="c2")


def test_concurrent_first_updates_merge(registry: Registry) -> None:
    changes = [
        UpdateSessionRequest(session_id="shared", task="text-generation"),
        UpdateSessionRequest(session_id="shared", selected_model="org/m"),
        UpdateSessionRequest(session_id="shared", is_custom_model=True),
    ] * 3
    with ThreadPoolExecutor(max_workers=9) as pool:
        list(pool.map(registry.sessions.update, changes))
    state = registry.sessions.get("shared")
    assert (state.task, state.selected_model, state.is_custom_model) == ("text-generation", "org/m", True)


def test_text_the_columns_cannot_hold_is_invalid(registry: Registry) -> None:
    with pytest.raises(InvalidArgument) as info:
        registry.sessions.update(UpdateSessionRequest(session_id="x" * 300, task="t"))
    assert [v.field for v in info.value.violations] == ["session_id"]
    with pytest.raises(InvalidArgument) as info:
        registry.sessions.get("a\x00b")
    with pytest.raises(InvalidArgument) as info:
        registry.sessions.update(UpdateSessionRequest(session_id="c", task="t" * 65, selected_model="m\x00"))
    assert [v.field for v in info.value.violations] == ["task", "selected_model"]
