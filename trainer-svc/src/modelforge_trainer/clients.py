"""gRPC clients for the services the trainer calls (registry-svc, hardware-svc), behind ports.py's
interfaces. gRPC errors become domain errors here, so nothing else sees grpc."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from modelforge.v1 import hardware_pb2, hardware_pb2_grpc, registry_pb2, registry_pb2_grpc
from modelforge_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ModelForgeError,
    NotFound,
    Unavailable,
)
from modelforge_common.grpc_client import make_channel, violations_of
from modelforge_trainer.convert import model_to_pb, record_changes
from modelforge_trainer.ports import DatasetInfo, JobRecord, MemoryEstimate, MemoryQuery, ModelRecord

log = logging.getLogger(__name__)


def _domain_error(service: str, error: grpc.aio.AioRpcError) -> ModelForgeError:
    code = error.code()
    detail = error.details() or code.name
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(detail)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(detail, violations_of(error))
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(detail)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(detail)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        # gRPC's own details name the address it dialled: for the log, never for a client or a job.
        log.warning("%s call failed (%s): %s", service, code.name, detail)
        what = "is unavailable" if code == grpc.StatusCode.UNAVAILABLE else "did not answer in time"
        return Unavailable(f"{service} {what}")
    return Unavailable(f"{service} failed ({code.name}): {detail}")


class RegistryClient:
    """DatasetLookup and ModelRegistrar over RegistryService."""

    def __init__(self, target: str, timeout_s: float = 10.0) -> None:
        self._channel = make_channel(target)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._timeout_s = timeout_s

    async def get_dataset(self, name: str) -> DatasetInfo:
        try:
            reply = await self._stub.GetDataset(registry_pb2.GetDatasetRequest(name=name), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _domain_error("registry-svc", exc) from None
        dataset = reply.dataset
        return DatasetInfo(filename=dataset.filename, path=dataset.path, num_examples=dataset.num_examples)

    async def register_model(self, record: ModelRecord) -> str:
        try:
            reply = await self._stub.RegisterModel(
                registry_pb2.RegisterModelRequest(model=model_to_pb(record)), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise _domain_error("registry-svc", exc) from None
        return reply.model.model_id or str(reply.model.id)

    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        try:
            reply = await self._stub.CreateJob(
                registry_pb2.CreateJobRequest(job=record), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise _domain_error("registry-svc", exc) from None
        return reply.job, reply.created

    async def get_job(self, job_id: str) -> JobRecord:
        try:
            reply = await self._stub.GetJob(registry_pb2.GetJobRequest(job_id=job_id), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _domain_error("registry-svc", exc) from None
        return reply.job

    async def list_jobs(
        self, statuses: Collection[str], limit: int, offset: int, *, in_progress_first: bool = False
    ) -> tuple[list[JobRecord], int]:
        request = registry_pb2.ListJobsRequest(
            statuses=list(statuses), limit=limit, offset=offset, in_progress_first=in_progress_first
        )
        try:
            reply = await self._stub.ListJobs(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _domain_error("registry-svc", exc) from None
        return list(reply.jobs), reply.total

    async def update_job(
        self, job_id: str, changes: dict[str, Any], expected_statuses: Collection[str] = ()
    ) -> JobRecord:
        request = registry_pb2.UpdateJobRequest(
            job_id=job_id,
            job=record_changes(job_id, changes),
            update_mask=field_mask_pb2.FieldMask(paths=sorted(changes)),
            expected_statuses=list(expected_statuses),
        )
        try:
            reply = await self._stub.UpdateJob(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _domain_error("registry-svc", exc) from None
        return reply.job

    async def close(self) -> None:
        await self._channel.close()


class HardwareClient:
    """MemoryEstimator over HardwareService."""

    def __init__(self, target: str, timeout_s: float = 5.0) -> None:
        self._channel = make_channel(target)
        self._stub = hardware_pb2_grpc.HardwareServiceStub(self._channel)
        self._timeout_s = timeout_s

    async def estimate_memory(self, query: MemoryQuery) -> MemoryEstimate:
        request = hardware_pb2.EstimateMemoryRequest(
            model_name=query.model_name,
            strategy=query.strategy,
            task=query.task,
            lora_r=query.lora_r,
            batch_size=query.batch_size,
            max_seq_length=query.max_seq_length,
            precision=query.precision,
            use_4bit=query.use_4bit,
            gradient_checkpointing=query.gradient_checkpointing,
            gpu_index=-1,
            provider=query.provider,
            lora_dropout=query.lora_dropout,
            gradient_accumulation_steps=query.gradient_accumulation_steps,
            providers=list(query.providers),
            world_size=query.world_size,
            distributed=query.distributed,
        )
        try:
            reply = await self._stub.EstimateMemory(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _domain_error("hardware-svc", exc) from None
        return MemoryEstimate(
            fits=reply.fits,
            total_bytes=reply.breakdown.total_bytes,
            available_bytes=reply.available_bytes,
            device=reply.device or "this node",
            message=reply.message,
        )

    async def close(self) -> None:
        await self._channel.close()
