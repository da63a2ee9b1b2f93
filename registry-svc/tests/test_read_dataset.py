"""ReadDataset: an uploaded dataset's bytes back, in chunks; only uploaded files by their filename."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from modelforge.v1 import registry_pb2, registry_pb2_grpc
from modelforge_common.errors import FailedPrecondition
from modelforge_common.grpc_client import make_channel
from modelforge_registry.app import Registry, build_registry_server, open_registry

TIMEOUT = 10


@pytest.fixture
async def stub(data_dir: Path, database_url: str) -> AsyncIterator[registry_pb2_grpc.RegistryServiceStub]:
    registry = open_registry(data_dir, database_url, max_upload_bytes=64 * 1024, orphan_grace_s=0)
    server, port, _ = build_registry_server(registry, "127.0.0.1:0")
    await server.start()
    channel = make_channel(f"127.0.0.1:{port}")
    try:
        yield registry_pb2_grpc.RegistryServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)
        registry.close()


def upload_messages(filename: str, content: bytes) -> Iterator[registry_pb2.UploadDatasetRequest]:
    yield registry_pb2.UploadDatasetRequest(filename=filename)
    for start in range(0, len(content), 100):
        yield registry_pb2.UploadDatasetRequest(chunk=content[start : start + 100])


async def read_all(stub: registry_pb2_grpc.RegistryServiceStub, name: str) -> bytes:
    call = stub.ReadDataset(registry_pb2.ReadDatasetRequest(name=name), timeout=TIMEOUT)
    return b"".join([reply.chunk async for reply in call])


async def expect_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_read_returns_the_uploaded_bytes(stub: registry_pb2_grpc.RegistryServiceStub, valid_jsonl: bytes) -> None:
    reply = await stub.UploadDataset(upload_messages("train.jsonl", valid_jsonl), timeout=TIMEOUT)
    assert await read_all(stub, reply.dataset.filename) == valid_jsonl


@pytest.mark.parametrize("name", ["missing.jsonl", "registry.db", "../registry.db", ""])
async def test_read_refuses_what_was_not_uploaded(
    stub: registry_pb2_grpc.RegistryServiceStub, name: str, data_dir: Path
) -> None:
    (data_dir / "datasets" / "stray.jsonl").write_text("{}\n")
    error = await expect_error(read_all(stub, name))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    stray = await expect_error(read_all(stub, "stray.jsonl"))
    assert stray.code() == grpc.StatusCode.NOT_FOUND


async def test_an_unfinished_jobs_eval_dataset_is_in_use(registry: Registry, valid_jsonl: bytes) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield valid_jsonl

    await registry.datasets.upload("train.jsonl", chunks())
    await registry.datasets.upload("eval.jsonl", chunks())
    registry.jobs.create(
        registry_pb2.Job(job_id="job_eval", request={"dataset": "train.jsonl", "eval_dataset": "eval.jsonl"})
    )
    with pytest.raises(FailedPrecondition) as refused:
        registry.datasets.delete("eval.jsonl")
    assert "job_eval" in refused.value.message
