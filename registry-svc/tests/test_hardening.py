"""Nothing poisons the registry: a refused upload stores nothing, a row commits only with its file in
place, a damaged row never breaks a listing, datasets can be deleted (not while a job uses them),
listings are summaries, and the gauges count what is stored. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from modelforge.v1 import registry_pb2, registry_pb2_grpc
from modelforge_common.errors import FailedPrecondition, InvalidArgument, NotFound
from modelforge_common.grpc_client import make_channel
from modelforge_common.grpc_server import mark_serving
from modelforge_common.metrics import REGISTRY as METRICS
from modelforge_registry import convert, datasets
from modelforge_registry.app import SERVICE_NAME, Registry, build_registry_server
from modelforge_registry.domain import DatasetInfo, ModelFilter, NewModel
from modelforge_registry.store import DatasetRecord

from .test_lineage_and_listing import lineage

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PAIR = b'{"prompt": "p", "completion": "c"}'


async def chunked(content: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


def upload(registry: Registry, filename: str, content: bytes) -> DatasetInfo:
    return asyncio.run(registry.datasets.upload(filename, chunked(content, 4096)))


def stored_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "datasets").iterdir())


def with_bad_line_3(bad: bytes) -> bytes:
    lines = [PAIR] * 12
    lines.insert(2, bad)
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (b'{"\\udc80k": "v", "prompt": "p", "completion": "c"}', "unpaired surrogate"),
        (b'{"prompt": "\\ud800", "completion": "c"}', "unpaired surrogate"),
        (b'{"prompt": "p", "completion": "c", "n": ' + b"9" * 5000 + b"}", "5000 digits"),
        (b"[" * 20_000, "nests deeper"),  # the test cap is 64 KiB; the common tests use 200,000
        (b'{"prompt":\r"p", "completion": "c"}', "carriage return"),
        (b'{"prompt": "p", "completion": "c"}\x00', "NUL byte"),
        (b'{"prompt": "\xc3(", "completion": "c"}', "not UTF-8"),
    ],
)
def test_a_poison_upload_is_refused_with_its_line_and_stores_nothing(
    registry: Registry, data_dir: Path, bad: bytes, fragment: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        upload(registry, "poison.jsonl", with_bad_line_3(bad))
    assert len(info.value.violations) == 1
    assert info.value.violations[0].field in ("file/line 3", "file/line 3/prompt")
    assert fragment in info.value.violations[0].description
    assert stored_files(data_dir) == []
    assert registry.datasets.list() == []


def test_a_failure_after_the_file_is_linked_leaves_neither_file_nor_row(
    registry: Registry, data_dir: Path, valid_jsonl: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def failing_fsync(directory: Path) -> None:
        seen.append(sorted(p.name for p in directory.iterdir() if not p.name.startswith(".upload-")))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(datasets, "fsync_directory", failing_fsync)
    with pytest.raises(OSError):
        upload(registry, "train.jsonl", valid_jsonl)
    assert seen == [["train.jsonl"]]  # it was linked, then removed when the row could not commit
    assert stored_files(data_dir) == []
    assert registry.datasets.list() == []
    monkeypatch.undo()
    assert upload(registry, "train.jsonl", valid_jsonl).filename == "train.jsonl"


@sqlite_only
def test_a_damaged_row_is_listed_flagged_and_can_be_deleted(
    registry: Registry, data_dir: Path, valid_jsonl: bytes
) -> None:
    good = upload(registry, "good.jsonl", valid_jsonl)
    poison = data_dir / "datasets" / "poison.jsonl"
    poison.write_bytes(valid_jsonl)
    with registry.database.transaction() as session:
        # What an older version stored for a lone-surrogate key.
        session.add(DatasetRecord(
            filename="poison.jsonl", path="datasets/poison.jsonl", size_bytes=len(valid_jsonl), num_examples=12,
            sha256="ab" * 32, fields=["\udc80k", "prompt"], formats=["prompt_completion"],
            uploaded_at=good.uploaded_at,
        ))
    listed = registry.datasets.list()
    assert sorted(d.filename for d in listed) == ["good.jsonl", "poison.jsonl"]
    damaged = next(d for d in listed if d.filename == "poison.jsonl")
    assert not damaged.valid and damaged.fields == ("\\udc80k", "prompt")
    assert "damaged" in damaged.issues[0].message
    # Every listed dataset converts to a reply.
    assert [convert.dataset_pb(d).filename for d in listed]
    deleted = registry.datasets.delete("poison.jsonl")
    assert deleted.filename == "poison.jsonl"
    assert [d.filename for d in registry.datasets.list()] == ["good.jsonl"]
    assert stored_files(data_dir) == ["good.jsonl"]


def test_delete_removes_row_and_file_and_refuses_while_a_job_uses_it(
    registry: Registry, data_dir: Path, valid_jsonl: bytes
) -> None:
    upload(registry, "train.jsonl", valid_jsonl)
    upload(registry, "other.jsonl", valid_jsonl)
    with pytest.raises(NotFound):
        registry.datasets.delete("missing.jsonl")
    registry.jobs.create(registry_pb2.Job(job_id="train_a", request={"dataset": "train.jsonl"}))
    registry.jobs.create(registry_pb2.Job(job_id="train_b", status="running", request={
        "dataset": "datasets/other.jsonl", "config": {"dataset_path": str(data_dir.resolve() / "datasets/other.jsonl")}
    }))
    with pytest.raises(FailedPrecondition) as refused:
        registry.datasets.delete("train.jsonl")
    assert "train_a" in refused.value.message
    with pytest.raises(FailedPrecondition):
        registry.datasets.delete("other.jsonl")
    assert stored_files(data_dir) == ["other.jsonl", "train.jsonl"]

    registry.jobs.update("train_a", registry_pb2.Job(status="completed"), ["status"])
    assert registry.datasets.delete("train.jsonl").filename == "train.jsonl"
    assert stored_files(data_dir) == ["other.jsonl"]
    assert [d.filename for d in registry.datasets.list()] == ["other.jsonl"]
    with pytest.raises(NotFound):
        registry.datasets.get("train.jsonl")
    assert list((data_dir / ".trash").iterdir()) == []


def test_a_failed_delete_puts_the_file_back(
    registry: Registry, data_dir: Path, valid_jsonl: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(registry, "train.jsonl", valid_jsonl)
    real_transaction = registry.database.transaction

    @contextlib.contextmanager
    def commit_fails() -> Iterator[Any]:
        with real_transaction() as session:
            yield session
            # The file is in the trash by now; the database goes away before the commit.
            assert stored_files(data_dir) == []
            raise ConnectionError("server closed the connection unexpectedly")

    monkeypatch.setattr(registry.database, "transaction", commit_fails)
    with pytest.raises(ConnectionError):
        registry.datasets.delete("train.jsonl")
    monkeypatch.undo()
    assert stored_files(data_dir) == ["train.jsonl"]
    assert (data_dir / "datasets" / "train.jsonl").read_bytes() == valid_jsonl
    assert [d.filename for d in registry.datasets.list()] == ["train.jsonl"]


def test_model_listings_are_summaries_and_details_carry_the_rest(
    registry: Registry, model_folder: Callable[..., Path]
) -> None:
    sent = lineage()
    registered = registry.models.register(
        NewModel(path=str(model_folder("a")), lineage=sent, config={"lora_r": 8}, job_id="train_1",
                 base_model="org/Tiny", task="text-generation", strategy="sft", provider="huggingface",
                 training_params={"num_epochs": 1}, metrics={"final_loss": 0.5})
    )
    summary = registry.models.search(ModelFilter()).models[0]
    assert (summary.lineage, summary.config, summary.file_sha256) == (None, {}, {})
    assert (summary.model_id, summary.training_params, summary.metrics) == (
        registered.model_id, {"num_epochs": 1}, {"final_loss": 0.5})
    # Every field GET /api/models shows is in the summary.
    listed = convert.model_pb(summary)
    shown = ("id", "model_id", "name", "base_model", "task", "strategy", "provider", "created_at", "size_mb", "path")
    for name in shown:
        assert listed.HasField(name) if name == "created_at" else getattr(listed, name), name
    full = registry.models.search(ModelFilter(full=True)).models[0]
    assert full.lineage == sent and full.config == {"lora_r": 8} and full.file_sha256
    assert registry.models.get(registered.model_id).lineage == sent


def gauge(name: str) -> float | None:
    return METRICS.get_sample_value(name)


def test_gauges_count_models_and_datasets(
    registry: Registry, valid_jsonl: bytes, model_folder: Callable[..., Path]
) -> None:
    assert (gauge("modelforge_registry_models"), gauge("modelforge_registry_datasets")) == (0, 0)
    upload(registry, "train.jsonl", valid_jsonl)
    registry.models.register(NewModel(path=str(model_folder("a"))))
    registry.models.register(NewModel(path=str(model_folder("b"))))
    assert (gauge("modelforge_registry_models"), gauge("modelforge_registry_datasets")) == (2, 1)


async def test_over_grpc_delete_codes_and_summary_list_size(
    registry: Registry, valid_jsonl: bytes, model_folder: Callable[..., Path]
) -> None:
    server, port, health = build_registry_server(registry, "127.0.0.1:0")
    await server.start()
    await mark_serving(health, [SERVICE_NAME])
    try:
        async with make_channel(f"127.0.0.1:{port}") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            await registry_upload(stub, "train.jsonl", valid_jsonl)
            long_curve = lineage()
            long_curve["loss_curve"] = [{"step": i, "loss": 1.0, "epoch": 0.1} for i in range(1, 2001)]
            registry.models.register(NewModel(path=str(model_folder("a")), lineage=long_curve))
            summary = await stub.ListModels(registry_pb2.ListModelsRequest(), timeout=10)
            full = await stub.ListModels(registry_pb2.ListModelsRequest(view=registry_pb2.MODEL_VIEW_FULL), timeout=10)
            assert not summary.models[0].HasField("lineage") and len(full.models[0].lineage.loss_curve) == 2000
            assert summary.ByteSize() * 20 < full.ByteSize()

            registry.jobs.create(registry_pb2.Job(job_id="train_x", request={"dataset": "train.jsonl"}))
            with pytest.raises(grpc.aio.AioRpcError) as busy:
                await stub.DeleteDataset(registry_pb2.DeleteDatasetRequest(name="train.jsonl"), timeout=10)
            assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            registry.jobs.update("train_x", registry_pb2.Job(status="stopped"), ["status"])
            deleted = await stub.DeleteDataset(registry_pb2.DeleteDatasetRequest(name="train.jsonl"), timeout=10)
            assert deleted.dataset.filename == "train.jsonl" and deleted.dataset.num_examples == 12
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await stub.DeleteDataset(registry_pb2.DeleteDatasetRequest(name="train.jsonl"), timeout=10)
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as blank:
                await stub.DeleteDataset(registry_pb2.DeleteDatasetRequest(name=""), timeout=10)
            assert blank.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(0)


async def registry_upload(stub: Any, filename: str, content: bytes) -> None:
    def messages() -> Any:
        yield registry_pb2.UploadDatasetRequest(filename=filename)
        yield registry_pb2.UploadDatasetRequest(chunk=content)

    await stub.UploadDataset(messages(), timeout=10)


def test_stored_job_requests_name_their_datasets() -> None:
    assert datasets._datasets_named_by({"dataset": "a.jsonl", "config": {"dataset_path": "/d/a.jsonl"}}) == {
        "a.jsonl", "/d/a.jsonl"}
    assert datasets._datasets_named_by(json.loads('{"dataset": 3, "config": []}')) == set()
    assert datasets._datasets_named_by(None) == set()
