"""The OpenAI-compatible API under /v1: files and fine-tuning jobs here, models, chat and text
completions in serving.py, mapped onto the same gRPC services as /api (the registry's datasets and
models, the trainer's durable job queue, inference). A job created here is the job /api/jobs and
/ws/training show."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import grpc
from fastapi import APIRouter, File, Form, Header, Query, UploadFile
from fastapi.responses import Response, StreamingResponse

from modelforge.v1 import common_pb2, registry_pb2
from modelforge_gateway.clients import CallOptions
from modelforge_gateway.common.uploads import upload_filename
from modelforge_gateway.deps import (
    EventFeedDep,
    Owner,
    RegistryStub,
    Rpc,
    SettingsDep,
    TrainerStub,
)
from modelforge_gateway.openai import convert, objects, serving
from modelforge_gateway.openai.files import (
    PREFERENCE,
    check_file,
    new_file_id,
    original_lines,
    parse_stored_name,
    stored_name,
)
from modelforge_gateway.openai.responses import (
    CheckpointList,
    Deleted,
    FileList,
    FileObject,
    FineTuningJob,
    JobEventList,
    JobList,
)
from modelforge_gateway.openai.schemas import CreateFineTuningJob, Hyperparameters
from modelforge_gateway.openai.serving import IdPath
from modelforge_gateway.openai_errors import OpenAIError, not_found
from modelforge_gateway.replay import JOB_ID, HistoryUnavailable, read_history
from modelforge_gateway.upstream.datasets import delete_stored_dataset, list_stored_datasets
from modelforge_gateway.upstream.jobs import stop_job, trainer_status
from modelforge_gateway.upstream.models import registered_model_or_none

log = logging.getLogger(__name__)

# Left out of /openapi.json: the contract of these routes is OpenAI's own API reference (its bodies,
# its error shape), which the gateway's document, written for /api, would misdescribe.
router = APIRouter(prefix="/v1", tags=["openai"], include_in_schema=False)

Limit = Annotated[int, Query(ge=1, le=100)]
After = Annotated[str | None, Query(max_length=300)]
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,200}$"
JOB_PAGE = 500


# --- files -------------------------------------------------------------------------------------------


async def _file_datasets(registry: RegistryStub, rpc: CallOptions) -> list[registry_pb2.Dataset]:
    return [d for d in await list_stored_datasets(registry, rpc) if objects.file_object(d) is not None]


async def _file_dataset(
    registry: RegistryStub, rpc: CallOptions, file_id: str, param: str | None = None
) -> registry_pb2.Dataset:
    for dataset in await _file_datasets(registry, rpc):
        parsed = parse_stored_name(dataset.filename)
        if parsed is not None and parsed[0] == file_id:
            return dataset
    raise not_found("file", file_id, param)


@router.post("/files")
async def create_file(
    registry: RegistryStub,
    rpc: Rpc,
    settings: SettingsDep,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form(max_length=100)],
) -> FileObject:
    """A fine-tuning file (chat or preference format), checked line by line before it is stored."""
    if purpose != "fine-tune":
        raise OpenAIError(400, f"purpose {purpose!r} is not supported; ModelForge stores 'fine-tune' files", "purpose")
    filename = upload_filename(file)
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise OpenAIError(413, f"The file is larger than the limit of {settings.max_upload_bytes} bytes", "file")
    checked = check_file(await file.read())
    if not checked.valid:
        first = checked.problems[0]
        raise OpenAIError(400, checked.summary(), first.param or "file", "invalid_file_format")
    name = stored_name(new_file_id(), filename)
    reply = await registry.UploadDataset(
        convert.upload_messages(name, checked.content(), settings.upload_chunk_bytes), **rpc.write
    )
    created = objects.file_object(reply.dataset)
    assert created is not None, "the registry keeps the name it was given when it is free"
    return created


@router.get("/files")
async def list_files(
    registry: RegistryStub,
    rpc: Rpc,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    purpose: Annotated[str | None, Query(max_length=100)] = None,
) -> FileList:
    found = [objects.file_object(d) for d in await _file_datasets(registry, rpc)]
    items = [f for f in found if f is not None and purpose in (None, "fine-tune")]
    items.sort(key=lambda f: (f.created_at, f.id), reverse=order == "desc")
    data, has_more = objects.page(items, after, limit)
    return FileList(data=data, has_more=has_more)


@router.get("/files/{file_id}")
async def retrieve_file(file_id: IdPath, registry: RegistryStub, rpc: Rpc) -> FileObject:
    found = objects.file_object(await _file_dataset(registry, rpc, file_id))
    assert found is not None, "_file_dataset finds only datasets stored as files"
    return found


@router.get("/files/{file_id}/content")
async def file_content(file_id: IdPath, registry: RegistryStub, rpc: Rpc) -> Response:
    """The rows as uploaded, streamed line by line as the registry sends the stored file."""
    dataset = await _file_dataset(registry, rpc, file_id)
    # The write deadline, as uploads have: a large file takes a while to stream.
    call = registry.ReadDataset(convert.read_request(dataset.filename), **rpc.write)
    first = await call.read()  # here, so a refusal still gets its status code

    async def lines() -> AsyncIterator[bytes]:
        pending = b""
        reply = first
        try:
            while reply is not grpc.aio.EOF:
                assert isinstance(reply, registry_pb2.ReadDatasetResponse)
                *complete, pending = (pending + reply.chunk).split(b"\n")
                if complete:
                    yield b"".join(original_lines(b"\n".join(complete)))
                reply = await call.read()
            if pending.strip():
                yield b"".join(original_lines(pending))
        finally:
            call.cancel()

    return StreamingResponse(lines(), media_type="application/jsonl")


@router.delete("/files/{file_id}")
async def delete_file(file_id: IdPath, registry: RegistryStub, rpc: Rpc) -> Deleted:
    dataset = await _file_dataset(registry, rpc, file_id)
    await delete_stored_dataset(registry, rpc, dataset.filename)
    return Deleted(id=file_id, object="file")


# --- fine-tuning jobs -------------------------------------------------------------------------------


def _checked_job_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise not_found("fine-tuning job", job_id)
    return job_id


async def _job(trainer: TrainerStub, rpc: CallOptions, job_id: str) -> common_pb2.TrainingJob:
    try:
        reply = await trainer_status(trainer, rpc, _checked_job_id(job_id))
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            raise not_found("fine-tuning job", job_id) from exc
        raise
    if not reply.has_job or reply.job.job_id != job_id:
        raise not_found("fine-tuning job", job_id)
    return reply.job


async def _job_objects(
    registry: RegistryStub, rpc: CallOptions, jobs: list[common_pb2.TrainingJob]
) -> list[FineTuningJob]:
    """Job objects, with trained_tokens from each succeeded job's registered model."""
    models = await asyncio.gather(*(
        registered_model_or_none(registry, rpc, job.model_id if job.status == common_pb2.JOB_STATUS_COMPLETED else "")
        for job in jobs
    ))
    result = []
    for job, model in zip(jobs, models, strict=True):
        tokens = model.metrics.get("trained_tokens") if model is not None else None
        result.append(objects.job_object(job, int(tokens) if tokens is not None else None))
    return result


def _hyperparameters(body: CreateFineTuningJob) -> tuple[str, Hyperparameters | None]:
    """The strategy and the hyperparameters object of the request (method wins over the legacy field)."""
    kind = body.method.type if body.method else "supervised"
    if kind == "reinforcement":
        raise OpenAIError(400, "method.type 'reinforcement' is not supported; use 'supervised' or 'dpo'", "method.type")
    params: Hyperparameters | None = body.hyperparameters
    if body.method is not None:
        chosen = body.method.dpo if kind == "dpo" else body.method.supervised
        if chosen is not None and chosen.hyperparameters is not None:
            params = chosen.hyperparameters
        other = body.method.supervised if kind == "dpo" else body.method.dpo
        if other is not None:
            wrong = "supervised" if kind == "dpo" else "dpo"
            raise OpenAIError(400, f"method.{wrong} does not go with method.type '{kind}'", f"method.{wrong}")
    return ("dpo" if kind == "dpo" else "sft"), params


async def _job_file(
    registry: RegistryStub, rpc: CallOptions, file_id: str, param: str, strategy: str
) -> registry_pb2.Dataset:
    """The dataset of a job's training or validation file; its rows must suit the method."""
    try:
        dataset = await _file_dataset(registry, rpc, file_id, param)
    except OpenAIError as exc:
        raise OpenAIError(400, f"{param}: {exc.message}", exc.param, exc.code) from exc
    is_preference = "preferred_output" in dataset.fields
    if is_preference != (strategy == "dpo"):
        wanted = "dpo" if is_preference else "supervised"
        kind = PREFERENCE if is_preference else "chat"
        raise OpenAIError(400, f"{param} {file_id} holds {kind} rows: use method.type '{wanted}'", param)
    return dataset


@router.post("/fine_tuning/jobs")
async def create_job(
    body: CreateFineTuningJob,
    trainer: TrainerStub,
    registry: RegistryStub,
    rpc: Rpc,
    owner: Owner,
    idempotency_key: Annotated[str | None, Header(pattern=IDEMPOTENCY_KEY)] = None,
) -> FineTuningJob:
    """Queues the job on the durable job path POST /api/jobs uses."""
    if body.integrations:
        kinds = sorted({str(i.get("type")) for i in body.integrations})
        message = f"integrations {kinds} are not supported: ModelForge has no integrations"
        raise OpenAIError(400, message, "integrations")
    if body.metadata:
        raise OpenAIError(400, "metadata is not supported: ModelForge does not store job metadata", "metadata")
    strategy, params = _hyperparameters(body)
    dataset = await _job_file(registry, rpc, body.training_file, "training_file", strategy)
    evaluation = None
    if body.validation_file is not None:
        evaluation = await _job_file(registry, rpc, body.validation_file, "validation_file", strategy)
    config = convert.training_config(
        body, strategy, params, dataset.filename, evaluation.filename if evaluation is not None else None
    )
    reply = await trainer.SubmitTrainingJob(convert.submit_request(config, idempotency_key, owner), **rpc.write)
    return objects.job_object(reply.job)


async def _jobs_page(
    trainer: TrainerStub, rpc: CallOptions, after: str | None, limit: int
) -> tuple[list[common_pb2.TrainingJob], bool]:
    """Newest first, after the job `after` (the registry lists by queue time, so ids page stably)."""
    collected: list[common_pb2.TrainingJob] = []
    found = after is None
    offset = 0
    while len(collected) <= limit:
        reply = await trainer.ListTrainingJobs(convert.jobs_page_request(JOB_PAGE, offset), **rpc.read)
        for job in reply.jobs:
            if found:
                collected.append(job)
            elif job.job_id == after:
                found = True
        offset += len(reply.jobs)
        if not reply.jobs or offset >= reply.total:
            break
    return collected[:limit], len(collected) > limit


@router.get("/fine_tuning/jobs")
async def list_jobs(
    trainer: TrainerStub, registry: RegistryStub, rpc: Rpc, after: After = None, limit: Limit = 20
) -> JobList:
    jobs, has_more = await _jobs_page(trainer, rpc, after, limit)
    return JobList(data=await _job_objects(registry, rpc, jobs), has_more=has_more)


@router.get("/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: IdPath, trainer: TrainerStub, registry: RegistryStub, rpc: Rpc) -> FineTuningJob:
    return (await _job_objects(registry, rpc, [await _job(trainer, rpc, job_id)]))[0]


@router.post("/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: IdPath, trainer: TrainerStub, rpc: Rpc) -> FineTuningJob:
    """A queued job is cancelled at once; a running one stops at its next step."""
    await _job(trainer, rpc, job_id)
    try:
        stopped = await stop_job(trainer, rpc, job_id)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED):
            raise OpenAIError(409, f"Fine-tuning job {job_id} has already finished and cannot be cancelled.") from exc
        raise
    return objects.job_object(stopped)


@router.get("/fine_tuning/jobs/{job_id}/events")
async def list_events(
    job_id: IdPath, trainer: TrainerStub, rpc: Rpc, feed: EventFeedDep, after: After = None, limit: Limit = 20
) -> JobEventList:
    """The job's stored training events, newest first; `after` is an event id from an earlier page."""
    await _job(trainer, rpc, job_id)
    try:
        history = await read_history(feed.connection, job_id)
    except HistoryUnavailable as exc:
        raise OpenAIError(503, f"The job's events cannot be read right now: {exc}") from exc
    newest_first = sorted(history, key=lambda e: int(e["seq"]), reverse=True)
    if after is not None:
        before = objects.event_seq(after, job_id)
        if before is None:
            raise OpenAIError(400, f"after: {after!r} is not an event id of job {job_id}", "after")
        newest_first = [e for e in newest_first if int(e["seq"]) < before]
    chosen = newest_first[:limit]
    return JobEventList(data=[objects.event_object(e) for e in chosen], has_more=len(newest_first) > limit)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
async def list_checkpoints(
    job_id: IdPath, trainer: TrainerStub, registry: RegistryStub, rpc: Rpc, after: After = None, limit: Limit = 10
) -> CheckpointList:
    """A finished job's checkpoint: its registered model (the trainer keeps no others once it is registered)."""
    job = await _job(trainer, rpc, job_id)
    model = await registered_model_or_none(registry, rpc, job.model_id)
    items = [objects.checkpoint_object(job, model)] if model is not None else []
    data, has_more = objects.page(items, after, limit)
    return CheckpointList(data=data, has_more=has_more)


# Models and completions: serving.py, under the same prefix.
router.include_router(serving.router)
