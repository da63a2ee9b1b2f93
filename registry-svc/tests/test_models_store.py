"""ModelCatalog against SQLite and PostgreSQL: registration, lookup, deletion, startup sweep."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from modelforge.v1.registry_pb2 import Job
from modelforge_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from modelforge_registry.app import Registry
from modelforge_registry.domain import NewModel
from modelforge_registry.files import DataDir
from modelforge_registry.store import ModelRecord
from modelforge_registry.store.orm import MODEL_DELETING

MakeFolder = Callable[..., Path]

# Filesystem logic only: the database plays no part, so SQLite is enough.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_register_assigns_ids_and_computes_size_and_digests(registry: Registry, model_folder: MakeFolder) -> None:
    folder = model_folder("run1", {"a.bin": b"x" * 1024 * 1024, "sub/b.json": b"{}"})
    model = registry.models.register(NewModel(
        path=str(folder), name="my-model", base_model="org/Tiny", task="text-generation", strategy="sft",
        provider="huggingface", config={"lora_r": 8, "learning_rate": 0.0002}, job_id="train_1",
        training_params={"num_epochs": 3}, metrics={"final_loss": 0.25}, adapter_type="lora"))

    assert model.id >= 1
    assert re.fullmatch(r"model_\d{8}_\d{6}_[0-9a-f]{4}", model.model_id)
    assert model.created_at.tzinfo is not None
    assert abs(model.created_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert model.size_mb == pytest.approx((1024 * 1024 + 2) / (1024 * 1024))
    assert model.file_sha256 == {
        "a.bin": hashlib.sha256(b"x" * 1024 * 1024).hexdigest(),
        "sub/b.json": hashlib.sha256(b"{}").hexdigest(),
    }
    assert model.path == folder
    assert registry.models.get(str(model.id)) == model
    assert registry.models.get(model.model_id) == model
    assert model.config == {"lora_r": 8, "learning_rate": 0.0002}
    assert (model.job_id, model.adapter_type, model.metrics) == ("train_1", "lora", {"final_loss": 0.25})


@sqlite_only
def test_given_size_and_digests_are_kept(registry: Registry, model_folder: MakeFolder) -> None:
    folder = model_folder()
    model = registry.models.register(NewModel(path=str(folder), size_mb=12.5, file_sha256={"f": "ab"}))
    assert (model.size_mb, model.file_sha256) == (12.5, {"f": "ab"})


def test_names_are_derived_and_unique(registry: Registry, model_folder: MakeFolder) -> None:
    def tiny_llama(folder: str) -> NewModel:
        return NewModel(path=str(model_folder(folder)), base_model="org/Tiny-Llama", strategy="sft")

    first = registry.models.register(tiny_llama("a"))
    second = registry.models.register(tiny_llama("b"))
    third = registry.models.register(NewModel(path=str(model_folder("c"))))
    assert (first.name, second.name, third.name) == ("Tiny-Llama-sft", "Tiny-Llama-sft-2", "model-finetuned")


def test_a_taken_name_or_folder_is_refused(registry: Registry, model_folder: MakeFolder) -> None:
    folder = model_folder("a")
    registry.models.register(NewModel(path=str(folder), name="mine"))
    with pytest.raises(AlreadyExists, match=r"^Model name 'mine' is already taken$"):
        registry.models.register(NewModel(path=str(model_folder("b")), name="mine"))
    with pytest.raises(AlreadyExists, match=r"^Model folder models/a is already registered as model_"):
        registry.models.register(NewModel(path=str(folder), name="other"))


@sqlite_only
@pytest.mark.parametrize(
    "path", ["", "/etc", "models/missing", "models", "models/../..", "datasets", "datasets/sub", ".trash/x", "a\x00b"])
def test_register_refuses_paths_that_are_not_model_folders_in_the_data_dir(
    registry: Registry, data_dir: Path, path: str
) -> None:
    (data_dir / "datasets" / "sub").mkdir()
    (data_dir / ".trash" / "x").mkdir()
    with pytest.raises(InvalidArgument) as info:
        registry.models.register(NewModel(path=path))
    assert [v.field for v in info.value.violations] == ["path"]


@sqlite_only
def test_register_refuses_an_unknown_adapter_type(registry: Registry, model_folder: MakeFolder) -> None:
    with pytest.raises(InvalidArgument) as info:
        registry.models.register(NewModel(path=str(model_folder()), adapter_type="magic"))
    assert [v.field for v in info.value.violations] == ["adapter_type"]


@pytest.mark.parametrize(
    ("field", "value"), [("name", "n" * 256), ("task", "t" * 65), ("base_model", "a\x00b"), ("job_id", "j" * 129)])
def test_register_refuses_text_the_columns_cannot_hold(
    registry: Registry, model_folder: MakeFolder, field: str, value: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        registry.models.register(NewModel(path=str(model_folder()), **{field: value}))
    assert [v.field for v in info.value.violations] == [field]
    assert registry.models.list() == []


@pytest.mark.parametrize("ident", ["a\x00b", "999", "model_20240315_143022_ab12", "99999999999999999999999", "-1"])
def test_unknown_models_are_not_found(registry: Registry, ident: str) -> None:
    with pytest.raises(NotFound) as info:
        registry.models.get(ident)
    assert info.value.message == f"Model {ident} not found"
    with pytest.raises(NotFound):
        registry.models.delete(ident)


def test_an_empty_id_is_invalid(registry: Registry) -> None:
    with pytest.raises(InvalidArgument):
        registry.models.get("")


def test_list_is_newest_first_and_filters_by_task(registry: Registry, model_folder: MakeFolder) -> None:
    a = registry.models.register(NewModel(path=str(model_folder("a")), task="summarization"))
    b = registry.models.register(NewModel(path=str(model_folder("b")), task="text-generation"))
    c = registry.models.register(NewModel(path=str(model_folder("c")), task="summarization"))
    assert [m.model_id for m in registry.models.list()] == [c.model_id, b.model_id, a.model_id]
    assert [m.model_id for m in registry.models.list("summarization")] == [c.model_id, a.model_id]
    assert registry.models.list("extractive-question-answering") == []


def test_delete_removes_row_and_files(registry: Registry, model_folder: MakeFolder, data_dir: Path) -> None:
    keep = registry.models.register(NewModel(path=str(model_folder("keep"))))
    gone = registry.models.register(NewModel(path=str(model_folder("gone")), name="gone"))
    deleted = registry.models.delete(str(gone.id))
    assert deleted == gone
    assert not gone.path.exists()
    assert keep.path.exists()
    assert [m.model_id for m in registry.models.list()] == [keep.model_id]
    assert list((data_dir / ".trash").iterdir()) == []
    with pytest.raises(NotFound):
        registry.models.get(gone.model_id)


@sqlite_only
def test_delete_refuses_a_folder_that_now_points_outside(
    registry: Registry, model_folder: MakeFolder, tmp_path: Path
) -> None:
    folder = model_folder("a")
    model = registry.models.register(NewModel(path=str(folder)))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    for child in folder.rglob("*"):
        if child.is_file():
            child.unlink()
    for child in sorted(folder.rglob("*"), reverse=True):
        child.rmdir()
    folder.rmdir()
    folder.symlink_to(outside, target_is_directory=True)

    with pytest.raises(FailedPrecondition, match="outside the data directory"):
        registry.models.delete(model.model_id)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert registry.models.get(model.model_id) == model


def _mark_deleting(registry: Registry, model_id: str) -> None:
    with registry.database.transaction() as session:
        session.execute(update(ModelRecord).where(ModelRecord.model_id == model_id).values(state=MODEL_DELETING))


def test_recover_finishes_interrupted_deletions_and_removes_orphans(
    registry: Registry, model_folder: MakeFolder, data_dir: Path
) -> None:
    kept = registry.models.register(NewModel(path=str(model_folder("kept"))))
    nested = registry.models.register(NewModel(path=str(model_folder("job7/final"))))
    marked_only = registry.models.register(NewModel(path=str(model_folder("marked"))))
    moved = registry.models.register(NewModel(path=str(model_folder("moved"))))
    # Crash after step 1 (row marked) and after step 2 (folder already in the trash).
    _mark_deleting(registry, marked_only.model_id)
    _mark_deleting(registry, moved.model_id)
    assert registry.data_dir.move_to_trash(moved.path, moved.model_id) is not None
    orphan = model_folder("orphan")

    assert [m.model_id for m in registry.models.list()] == [nested.model_id, kept.model_id]
    registry.models.recover(orphan_grace_s=0)

    with registry.database.transaction() as session:
        assert set(session.scalars(select(ModelRecord.model_id))) == {kept.model_id, nested.model_id}
    assert sorted(p.name for p in (data_dir / "models").iterdir()) == ["job7", "kept"]
    assert list((data_dir / ".trash").iterdir()) == []
    assert not orphan.exists()
    assert nested.path.is_dir()


@sqlite_only
def test_recover_keeps_recently_written_unregistered_folders(registry: Registry, model_folder: MakeFolder) -> None:
    fresh = model_folder("in-progress")
    stale = model_folder("stale")
    old = time.time() - 7200
    for path in [stale, *stale.rglob("*")]:
        os.utime(path, (old, old), follow_symlinks=False)
    registry.models.recover(orphan_grace_s=3600)
    assert fresh.is_dir()
    assert not stale.exists()


def test_concurrent_registrations_get_distinct_names(registry: Registry, model_folder: MakeFolder) -> None:
    folders = [model_folder(f"run{i}") for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        models = list(pool.map(
            lambda f: registry.models.register(NewModel(path=str(f), base_model="org/Tiny", strategy="sft")), folders))
    assert sorted(m.name for m in models) == sorted(["Tiny-sft", *(f"Tiny-sft-{i}" for i in range(2, 9))])
    assert len({m.model_id for m in models}) == len({m.id for m in models}) == 8


@sqlite_only
def test_a_failed_move_leaves_the_model_in_place(
    registry: Registry, model_folder: MakeFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = registry.models.register(NewModel(path=str(model_folder("a"))))

    def refuse(self: object, path: Path, label: str) -> Path | None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(DataDir, "move_to_trash", refuse)
    with pytest.raises(FailedPrecondition, match="Could not delete the files of model"):
        registry.models.delete(model.model_id)
    assert registry.models.get(model.model_id) == model
    assert model.path.is_dir()


@sqlite_only
def test_a_crash_between_row_delete_and_file_delete_leaves_no_orphan(
    registry: Registry, model_folder: MakeFolder, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row is gone and the process dies before the files are removed: the folder waits in the
    trash, never under models/ where it would look like a model, and the startup sweep removes it."""
    model = registry.models.register(NewModel(path=str(model_folder("victim"))))

    def crash(path: Path) -> None:
        raise SystemExit("simulated crash after the row delete")

    monkeypatch.setattr("modelforge_registry.models.remove", crash)
    with pytest.raises(SystemExit):
        registry.models.delete(model.model_id)
    monkeypatch.undo()
    with pytest.raises(NotFound):
        registry.models.get(model.model_id)
    assert list((data_dir / "models").iterdir()) == []
    assert len(list((data_dir / ".trash").iterdir())) == 1

    registry.models.recover(orphan_grace_s=0)
    assert list((data_dir / ".trash").iterdir()) == []
    assert registry.models.list() == []


def test_recover_keeps_the_model_folder_of_a_job_still_registering(
    registry: Registry, model_folder: MakeFolder
) -> None:
    # Issue 14: a trainer retrying registration through a registry outage must find its folder again.
    registering = model_folder("train_registering")
    running = model_folder("train_running")
    finished = model_folder("train_failed")
    registry.jobs.create(Job(job_id="train_registering", status="registering"))
    registry.jobs.create(Job(job_id="train_running", status="running"))
    registry.jobs.create(Job(job_id="train_failed", status="error"))

    registry.models.recover(orphan_grace_s=0)

    assert registering.is_dir() and running.is_dir()
    assert not finished.exists()  # a job that ended without a model leaves a true orphan


def test_a_repeated_registration_of_one_jobs_folder_answers_the_first(
    registry: Registry, model_folder: MakeFolder
) -> None:
    # The trainer retries when an answer is lost; the retry must not turn a registered model into an error.
    folder = model_folder("run-retried")
    first = registry.models.register(NewModel(path=str(folder), name="retried", job_id="train_9"))
    again = registry.models.register(NewModel(path=str(folder), name="retried", job_id="train_9"))
    assert again.model_id == first.model_id
    assert len([m for m in registry.models.list() if m.job_id == "train_9"]) == 1
    # Another job (or none) naming the same folder is still refused.
    with pytest.raises(AlreadyExists, match="already registered"):
        registry.models.register(NewModel(path=str(folder), job_id="train_10"))
    with pytest.raises(AlreadyExists, match="already registered"):
        registry.models.register(NewModel(path=str(folder)))
