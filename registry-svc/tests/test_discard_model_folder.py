"""ModelCatalog.discard_unregistered: how the gateway has a merge's folder removed when the merge or
its registration failed (registry-svc owns deletion)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelforge_common.errors import FailedPrecondition, InvalidArgument
from modelforge_registry.app import Registry
from modelforge_registry.domain import NewModel

MakeFolder = Callable[..., Path]

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
def test_an_unregistered_folder_is_removed_and_the_trash_left_empty(
    registry: Registry, model_folder: MakeFolder, data_dir: Path
) -> None:
    folder = model_folder("m1-merged-abcd1234")
    assert registry.models.discard_unregistered("models/m1-merged-abcd1234") is True
    assert not folder.exists()
    assert list((data_dir / ".trash").iterdir()) == []
    # Already gone: nothing to do, no error.
    assert registry.models.discard_unregistered(str(folder)) is False


@sqlite_only
def test_a_registered_folder_is_refused_and_kept(registry: Registry, model_folder: MakeFolder) -> None:
    folder = model_folder("kept")
    registry.models.register(NewModel(path=str(folder), name="kept-model"))
    with pytest.raises(FailedPrecondition, match="registered"):
        registry.models.discard_unregistered("models/kept")
    assert folder.is_dir()


@sqlite_only
@pytest.mark.parametrize("raw", ["", "models", "datasets/x", "models/a/b", "../outside", "/etc", ".trash/x"])
def test_only_folders_directly_under_models_can_be_discarded(
    registry: Registry, model_folder: MakeFolder, raw: str
) -> None:
    model_folder("a/b")
    with pytest.raises(InvalidArgument) as refused:
        registry.models.discard_unregistered(raw)
    assert refused.value.violations[0].field == "path"
