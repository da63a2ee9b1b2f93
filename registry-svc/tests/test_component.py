"""RegistryService through a real grpc.aio server on port 0, as a client sees it."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelforge.v1 import registry_pb2, registry_pb2_grpc
from modelforge_common.errors import FieldViolation
from modelforge_common.grpc_client import make_channel, violations_of
from modelforge_common.grpc_server import mark_serving
from modelforge_registry.app import SERVICE_NAME, Registry, build_registry_server, open_registry
from modelforge_registry.files import DataDir

MakeFolder = Callable[..., Path]
TIMEOUT = 10


@dataclass
class Served:
    stub: registry_pb2_grpc.RegistryServiceStub
    channel: grpc.aio.Channel
    registry: Registry


class Servers:
    """Opens the registry (migrate + startup sweep) and serves it on port 0; a test may stop and
    start it again over the same data dir and database."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.running: list[tuple[grpc.aio.Server, grpc.aio.Channel, Registry]] = []

    async def start(self) -> Served:
        registry = open_registry(self.data_dir, self.database_url, max_upload_bytes=64 * 1024, orphan_grace_s=0)
        server, port, health = build_registry_server(registry, "127.0.0.1:0")
        await server.start()
        await mark_serving(health, [SERVICE_NAME])
        channel = make_channel(f"127.0.0.1:{port}")
        self.running.append((server, channel, registry))
        return Served(registry_pb2_grpc.RegistryServiceStub(channel), channel, registry)

    async def stop_all(self) -> None:
        while self.running:
            server, channel, registry = self.running.pop()
            await channel.close()
            await server.stop(0)
            registry.close()


@pytest.fixture
async def servers(data_dir: Path, database_url: str) -> AsyncIterator[Servers]:
    servers = Servers(data_dir, database_url)
    yield servers
    await servers.stop_all()


@pytest.fixture
async def served(servers: Servers) -> Served:
    return await servers.start()


async def expect_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


def upload_messages(filename: str, content: bytes, chunk: int = 1000) -> Iterator[registry_pb2.UploadDatasetRequest]:
    yield registry_pb2.UploadDatasetRequest(filename=filename)
    for start in range(0, len(content), chunk):
        yield registry_pb2.UploadDatasetRequest(chunk=content[start : start + chunk])


def dataset_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "datasets").iterdir())


async def test_health_is_serving(served: Served) -> None:
    reply = await health_pb2_grpc.HealthStub(served.channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_model_lifecycle(served: Served, model_folder: MakeFolder) -> None:
    folder = model_folder("run1", {"adapter.bin": b"w" * 2048})
    registered = (await served.stub.RegisterModel(registry_pb2.RegisterModelRequest(model=registry_pb2.Model(
        path=str(folder), base_model="org/Tiny", task="text-generation", strategy="sft", provider="huggingface",
        config={"lora_r": 8}, training_params={"num_epochs": 3, "batch_size": 4, "learning_rate": 0.0002},
        metrics={"final_loss": 0.5}, job_id="train_1", adapter_type="lora")), timeout=TIMEOUT)).model
    assert registered.id > 0 and registered.model_id.startswith("model_")
    assert registered.name == "Tiny-sft"
    assert registered.created_at.seconds > 0
    assert registered.file_sha256 == {"adapter.bin": hashlib.sha256(b"w" * 2048).hexdigest()}
    assert registered.size_mb == pytest.approx(2048 / 1024 / 1024)
    assert dict(registered.training_params) == {"num_epochs": 3, "batch_size": 4, "learning_rate": 0.0002}
    assert registered.path == str(folder.resolve())

    by_id = await served.stub.GetModel(registry_pb2.GetModelRequest(id=str(registered.id)), timeout=TIMEOUT)
    by_model_id = await served.stub.GetModel(registry_pb2.GetModelRequest(id=registered.model_id), timeout=TIMEOUT)
    assert by_id.model == by_model_id.model == registered

    listed = await served.stub.ListModels(registry_pb2.ListModelsRequest(), timeout=TIMEOUT)
    assert [m.model_id for m in listed.models] == [registered.model_id]
    assert (await served.stub.ListModels(registry_pb2.ListModelsRequest(task="summarization"))).models == []

    deleted = await served.stub.DeleteModel(registry_pb2.DeleteModelRequest(id=registered.model_id), timeout=TIMEOUT)
    assert deleted.model == registered
    assert not folder.exists()
    error = await expect_error(served.stub.GetModel(registry_pb2.GetModelRequest(id=str(registered.id))))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, f"Model {registered.id} not found")


async def test_model_errors(served: Served, model_folder: MakeFolder) -> None:
    folder = model_folder("a")
    await served.stub.RegisterModel(registry_pb2.RegisterModelRequest(
        model=registry_pb2.Model(path=str(folder), name="mine")), timeout=TIMEOUT)
    taken = await expect_error(served.stub.RegisterModel(registry_pb2.RegisterModelRequest(
        model=registry_pb2.Model(path=str(model_folder("b")), name="mine")), timeout=TIMEOUT))
    assert (taken.code(), taken.details()) == (grpc.StatusCode.ALREADY_EXISTS, "Model name 'mine' is already taken")

    outside = await expect_error(served.stub.RegisterModel(registry_pb2.RegisterModelRequest(
        model=registry_pb2.Model(path="/etc")), timeout=TIMEOUT))
    assert outside.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations_of(outside)] == ["path"]

    missing = await expect_error(
        served.stub.DeleteModel(registry_pb2.DeleteModelRequest(id="model_x"), timeout=TIMEOUT))
    assert (missing.code(), missing.details()) == (grpc.StatusCode.NOT_FOUND, "Model model_x not found")


async def test_upload_valid_dataset(served: Served, valid_jsonl: bytes, data_dir: Path) -> None:
    reply = await served.stub.UploadDataset(upload_messages("train.jsonl", valid_jsonl, chunk=100), timeout=TIMEOUT)
    dataset = reply.dataset
    assert (dataset.filename, dataset.num_examples, dataset.size_bytes) == ("train.jsonl", 12, len(valid_jsonl))
    assert dataset.valid and list(dataset.fields) == ["completion", "prompt"]
    assert dataset.sha256 == hashlib.sha256(valid_jsonl).hexdigest()
    assert (data_dir / "datasets" / "train.jsonl").stat().st_size == len(valid_jsonl)
    assert dataset.path == str((data_dir / "datasets" / "train.jsonl").resolve())
    assert dataset.uploaded_at.seconds > 0

    again = await served.stub.UploadDataset(upload_messages("train.jsonl", valid_jsonl), timeout=TIMEOUT)
    assert again.dataset.filename == "train-2.jsonl"
    listed = await served.stub.ListDatasets(registry_pb2.ListDatasetsRequest(), timeout=TIMEOUT)
    assert [d.filename for d in listed.datasets] == ["train-2.jsonl", "train.jsonl"]
    got = await served.stub.GetDataset(registry_pb2.GetDatasetRequest(name="train.jsonl"), timeout=TIMEOUT)
    assert got.dataset == dataset
    assert dataset_files(data_dir) == ["train-2.jsonl", "train.jsonl"]


@pytest.mark.parametrize(
    ("filename", "content", "violations"),
    [
        ("d.jsonl", b"not json at all\n",
         [FieldViolation("file/line 1", "not valid JSON (Expecting value at column 1)")]),
        ("d.jsonl", b'{"prompt": "p", "completion": "c"}\n42\n',
         [FieldViolation("file/line 2", "must be a JSON object, got int")]),
        ("d.jsonl", b"", [FieldViolation("file", "the file is empty")]),
        ("d.jsonl", b'{"prompt": "p", "completion": ""}\n',
         [FieldViolation("file/line 1/completion", "must not be empty")]),
        ("d.txt", b'{"prompt": "p", "completion": "c"}\n',
         [FieldViolation("file", "must end in .jsonl, .json, .csv or .parquet")]),
    ],
)
async def test_invalid_uploads_are_refused_and_nothing_is_stored(
    served: Served, data_dir: Path, filename: str, content: bytes, violations: list[FieldViolation]
) -> None:
    error = await expect_error(served.stub.UploadDataset(upload_messages(filename, content), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations_of(error) == violations
    if filename.endswith(".jsonl"):
        assert error.details().startswith("Dataset validation failed: 1 problem(s): ")
    assert dataset_files(data_dir) == []
    assert (await served.stub.ListDatasets(registry_pb2.ListDatasetsRequest(), timeout=TIMEOUT)).datasets == []


async def test_upload_protocol_errors(served: Served, data_dir: Path) -> None:
    no_name = await expect_error(served.stub.UploadDataset(
        iter([registry_pb2.UploadDatasetRequest(chunk=b"{}\n")]), timeout=TIMEOUT))
    assert no_name.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations_of(no_name)] == ["file"]

    twice = await expect_error(served.stub.UploadDataset(iter([
        registry_pb2.UploadDatasetRequest(filename="a.jsonl"), registry_pb2.UploadDatasetRequest(filename="b.jsonl"),
    ]), timeout=TIMEOUT))
    assert (twice.code(), twice.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Only the first upload message may carry a filename")

    too_big = await expect_error(served.stub.UploadDataset(
        upload_messages("big.jsonl", b'{"prompt": "p", "completion": "c"}\n' * 3000), timeout=TIMEOUT))
    assert (too_big.code(), too_big.details()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "Dataset exceeds the upload limit of 65536 bytes")
    assert dataset_files(data_dir) == []


async def test_get_dataset_is_confined_to_the_data_dir(
    served: Served, valid_jsonl: bytes, data_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.jsonl").write_bytes(valid_jsonl)
    (data_dir / "datasets" / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    for name in ["../secret.jsonl", str(tmp_path / "secret.jsonl"), "datasets/../../secret.jsonl", "link.jsonl"]:
        error = await expect_error(served.stub.GetDataset(registry_pb2.GetDatasetRequest(name=name), timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert [v.field for v in violations_of(error)] == ["dataset"]

    missing = await expect_error(served.stub.GetDataset(
        registry_pb2.GetDatasetRequest(name="nope.jsonl"), timeout=TIMEOUT))
    assert (missing.code(), missing.details()) == (grpc.StatusCode.NOT_FOUND, "Dataset nope.jsonl not found")

    (data_dir / "placed.jsonl").write_bytes(valid_jsonl + b"oops\n")
    placed = (await served.stub.GetDataset(
        registry_pb2.GetDatasetRequest(name=str(data_dir / "placed.jsonl")), timeout=TIMEOUT)).dataset
    assert (placed.valid, placed.num_examples) == (False, 12)
    assert [(i.line, i.field) for i in placed.issues] == [(13, "")]
    assert not placed.HasField("uploaded_at")


async def test_sessions(served: Served) -> None:
    empty = await served.stub.GetSession(registry_pb2.GetSessionRequest(session_id="c1"), timeout=TIMEOUT)
    assert empty.session == registry_pb2.Session(session_id="c1")

    await served.stub.UpdateSession(registry_pb2.UpdateSessionRequest(
        session_id="c1", task="text-generation"), timeout=TIMEOUT)
    updated = await served.stub.UpdateSession(registry_pb2.UpdateSessionRequest(
        session_id="c1", selected_model="org/m", is_custom_model=False), timeout=TIMEOUT)
    session = updated.session
    assert (session.task, session.selected_model, session.is_custom_model) == ("text-generation", "org/m", False)
    assert session.updated_at.seconds > 0
    got = await served.stub.GetSession(registry_pb2.GetSessionRequest(session_id="c1"), timeout=TIMEOUT)
    assert got.session == session


@pytest.mark.parametrize("crash_after_move", [False, True])
async def test_a_crash_during_delete_is_finished_at_the_next_start(
    servers: Servers, model_folder: MakeFolder, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
    crash_after_move: bool,
) -> None:
    served = await servers.start()
    folder = model_folder("victim")
    survivor_folder = model_folder("survivor")
    victim = (await served.stub.RegisterModel(registry_pb2.RegisterModelRequest(
        model=registry_pb2.Model(path=str(folder))), timeout=TIMEOUT)).model
    survivor = (await served.stub.RegisterModel(registry_pb2.RegisterModelRequest(
        model=registry_pb2.Model(path=str(survivor_folder), name="survivor")), timeout=TIMEOUT)).model
    orphan = model_folder("orphan")

    real_move = DataDir.move_to_trash

    def crash(self: DataDir, path: Path, label: str) -> Path | None:
        if crash_after_move:
            real_move(self, path, label)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(DataDir, "move_to_trash", crash)
    error = await expect_error(served.stub.DeleteModel(registry_pb2.DeleteModelRequest(id=victim.model_id)))
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    monkeypatch.setattr(DataDir, "move_to_trash", real_move)
    # Half deleted: hidden from clients, its folder still on disk (in place or in the trash).
    hidden = await expect_error(served.stub.GetModel(registry_pb2.GetModelRequest(id=victim.model_id)))
    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    assert folder.exists() != crash_after_move
    await servers.stop_all()

    restarted = await servers.start()
    listed = await restarted.stub.ListModels(registry_pb2.ListModelsRequest(), timeout=TIMEOUT)
    assert [m.model_id for m in listed.models] == [survivor.model_id]
    assert [p.name for p in (data_dir / "models").iterdir()] == ["survivor"]
    assert list((data_dir / ".trash").iterdir()) == []
    assert not orphan.exists()


async def test_job_store_over_grpc(servers: Servers) -> None:
    served = await servers.start()
    stub = served.stub
    job = registry_pb2.Job(job_id="train_1", idempotency_key="k1", owner="alice")
    job.request.update({"model_name": "org/Tiny", "num_epochs": 1})
    created = await stub.CreateJob(registry_pb2.CreateJobRequest(job=job), timeout=TIMEOUT)
    assert created.created
    assert (created.job.status, created.job.request, created.job.owner) == ("queued", job.request, "alice")
    assert created.job.HasField("queued_at") and not created.job.HasField("started_at")
    retried = await stub.CreateJob(registry_pb2.CreateJobRequest(
        job=registry_pb2.Job(job_id="train_2", idempotency_key="k1")), timeout=TIMEOUT)
    assert (retried.created, retried.job) == (False, created.job)
    duplicate = await expect_error(stub.CreateJob(registry_pb2.CreateJobRequest(
        job=registry_pb2.Job(job_id="train_1")), timeout=TIMEOUT))
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS

    change = registry_pb2.Job(status="running", replica="r1", attempts=1)
    change.started_at.GetCurrentTime()
    claim = registry_pb2.UpdateJobRequest(job_id="train_1", job=change, expected_statuses=["queued"])
    claim.update_mask.paths.extend(["status", "replica", "attempts", "started_at"])
    running = (await stub.UpdateJob(claim, timeout=TIMEOUT)).job
    assert (running.status, running.replica, running.attempts, running.started_at) == (
        "running", "r1", 1, change.started_at)
    assert running.owner == "alice"  # not in the mask: kept
    lost = await expect_error(stub.UpdateJob(claim, timeout=TIMEOUT))
    assert (lost.code(), lost.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION, "Job train_1 is running, expected queued")
    bad_mask = registry_pb2.UpdateJobRequest(job_id="train_1")
    bad_mask.update_mask.paths.append("colour")
    invalid = await expect_error(stub.UpdateJob(bad_mask, timeout=TIMEOUT))
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations_of(invalid)] == ["update_mask"]

    await servers.stop_all()
    restarted = await servers.start()
    got = await restarted.stub.GetJob(registry_pb2.GetJobRequest(job_id="train_1"), timeout=TIMEOUT)
    assert got.job == running
    listed = await restarted.stub.ListJobs(registry_pb2.ListJobsRequest(statuses=["running"]), timeout=TIMEOUT)
    assert ([j.job_id for j in listed.jobs], listed.total) == (["train_1"], 1)
    await restarted.stub.CreateJob(registry_pb2.CreateJobRequest(
        job=registry_pb2.Job(job_id="train_3", status="completed")), timeout=TIMEOUT)
    newest = await restarted.stub.ListJobs(registry_pb2.ListJobsRequest(limit=1), timeout=TIMEOUT)
    first = await restarted.stub.ListJobs(
        registry_pb2.ListJobsRequest(limit=1, in_progress_first=True), timeout=TIMEOUT)
    assert ([j.job_id for j in newest.jobs], [j.job_id for j in first.jobs]) == (["train_3"], ["train_1"])
    missing = await expect_error(restarted.stub.GetJob(registry_pb2.GetJobRequest(job_id="nope"), timeout=TIMEOUT))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
