"""The OpenAI-compatible API under /v1: files, fine-tuning jobs, models, chat and text completions,
mapped onto the same gRPC services as /api (the registry's datasets and models, the trainer's durable
job queue, inference). A job created here is the job /api/jobs and /ws/training show."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, File, Form, Header, Path, Query, UploadFile
from fastapi.responses import Response, StreamingResponse

from modelforge.v1 import common_pb2, inference_pb2, registry_pb2, trainer_pb2
from modelforge_gateway.clients import CallOptions
from modelforge_gateway.common.uploads import upload_filename
from modelforge_gateway.deps import (
    EventFeedDep,
    InferenceStub,
    ModelLookupsDep,
    Owner,
    RegistryStub,
    Rpc,
    SettingsDep,
    TrainerStub,
)
from modelforge_gateway.openai import objects
from modelforge_gateway.openai.files import (
    PREFERENCE,
    check_file,
    new_file_id,
    original_lines,
    parse_stored_name,
    stored_name,
)
from modelforge_gateway.openai.schemas import ChatCompletionBody, CompletionBody, CreateFineTuningJob, GenerationBody
from modelforge_gateway.openai_errors import OpenAIError, not_found, openai_error_body
from modelforge_gateway.replay import JOB_ID, HistoryUnavailable, read_history
from modelforge_gateway.upstream.models import model_ref

log = logging.getLogger(__name__)

# Left out of /openapi.json: the contract of these routes is OpenAI's own API reference (its bodies,
# its error shape), which the gateway's document, written for /api, would misdescribe.
router = APIRouter(prefix="/v1", tags=["openai"], include_in_schema=False)

Limit = Annotated[int, Query(ge=1, le=100)]
After = Annotated[str | None, Query(max_length=300)]
IdPath = Annotated[str, Path(min_length=1, max_length=300)]
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,200}$"
# Completions' default max_tokens is OpenAI's; chat leaves the length to the inference service's default.
COMPLETION_MAX_TOKENS = 16
JOB_PAGE = 500


# --- files -------------------------------------------------------------------------------------------


async def _file_datasets(registry: RegistryStub, rpc: CallOptions) -> list[registry_pb2.Dataset]:
    reply = await registry.ListDatasets(registry_pb2.ListDatasetsRequest(), **rpc.read)
    return [d for d in reply.datasets if objects.file_object(d) is not None]


async def _file_dataset(
    registry: RegistryStub, rpc: CallOptions, file_id: str, param: str | None = None
) -> registry_pb2.Dataset:
    for dataset in await _file_datasets(registry, rpc):
        parsed = parse_stored_name(dataset.filename)
        if parsed is not None and parsed[0] == file_id:
            return dataset
    raise not_found("file", file_id, param)


async def _chunks(name: str, content: bytes, chunk_bytes: int) -> AsyncIterator[registry_pb2.UploadDatasetRequest]:
    yield registry_pb2.UploadDatasetRequest(filename=name)
    for start in range(0, len(content), chunk_bytes):
        yield registry_pb2.UploadDatasetRequest(chunk=content[start : start + chunk_bytes])


@router.post("/files")
async def create_file(
    registry: RegistryStub,
    rpc: Rpc,
    settings: SettingsDep,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form(max_length=100)],
) -> dict[str, Any]:
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
    reply = await registry.UploadDataset(_chunks(name, checked.content(), settings.upload_chunk_bytes), **rpc.write)
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
) -> dict[str, Any]:
    found = [objects.file_object(d) for d in await _file_datasets(registry, rpc)]
    items = [f for f in found if f is not None and purpose in (None, "fine-tune")]
    items.sort(key=lambda f: (f["created_at"], f["id"]), reverse=order == "desc")
    return objects.page(items, after, limit)


@router.get("/files/{file_id}")
async def retrieve_file(file_id: IdPath, registry: RegistryStub, rpc: Rpc) -> dict[str, Any]:
    found = objects.file_object(await _file_dataset(registry, rpc, file_id))
    assert found is not None, "_file_dataset finds only datasets stored as files"
    return found


@router.get("/files/{file_id}/content")
async def file_content(file_id: IdPath, registry: RegistryStub, rpc: Rpc) -> Response:
    """The rows as uploaded, streamed line by line as the registry sends the stored file."""
    dataset = await _file_dataset(registry, rpc, file_id)
    # The write deadline, as uploads have: a large file takes a while to stream.
    call = registry.ReadDataset(registry_pb2.ReadDatasetRequest(name=dataset.filename), **rpc.write)
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
async def delete_file(file_id: IdPath, registry: RegistryStub, rpc: Rpc) -> dict[str, Any]:
    dataset = await _file_dataset(registry, rpc, file_id)
    await registry.DeleteDataset(registry_pb2.DeleteDatasetRequest(name=dataset.filename), **rpc.write)
    return {"id": file_id, "object": "file", "deleted": True}


# --- fine-tuning jobs -------------------------------------------------------------------------------


def _checked_job_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise not_found("fine-tuning job", job_id)
    return job_id


async def _job(trainer: TrainerStub, rpc: CallOptions, job_id: str) -> common_pb2.TrainingJob:
    try:
        reply = await trainer.GetTrainingStatus(
            trainer_pb2.GetTrainingStatusRequest(job_id=_checked_job_id(job_id)), **rpc.read
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            raise not_found("fine-tuning job", job_id) from exc
        raise
    if not reply.has_job or reply.job.job_id != job_id:
        raise not_found("fine-tuning job", job_id)
    return reply.job


async def _model_or_none(registry: RegistryStub, rpc: CallOptions, model_id: str) -> registry_pb2.Model | None:
    if not model_id:
        return None
    try:
        return (await registry.GetModel(registry_pb2.GetModelRequest(id=model_id), **rpc.read)).model
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return None  # deleted since: the job keeps its history
        raise


async def _job_objects(
    registry: RegistryStub, rpc: CallOptions, jobs: list[common_pb2.TrainingJob]
) -> list[dict[str, Any]]:
    """Job objects, with trained_tokens from each succeeded job's registered model."""
    models = await asyncio.gather(*(
        _model_or_none(registry, rpc, job.model_id if job.status == common_pb2.JOB_STATUS_COMPLETED else "")
        for job in jobs
    ))
    result = []
    for job, model in zip(jobs, models, strict=True):
        tokens = model.metrics.get("trained_tokens") if model is not None else None
        result.append(objects.job_object(job, int(tokens) if tokens is not None else None))
    return result


def _hyperparameters(body: CreateFineTuningJob) -> tuple[str, Any]:
    """The strategy and the hyperparameters object of the request (method wins over the legacy field)."""
    kind = body.method.type if body.method else "supervised"
    if kind == "reinforcement":
        raise OpenAIError(400, "method.type 'reinforcement' is not supported; use 'supervised' or 'dpo'", "method.type")
    params: Any = body.hyperparameters
    if body.method is not None:
        chosen = body.method.dpo if kind == "dpo" else body.method.supervised
        if chosen is not None and chosen.hyperparameters is not None:
            params = chosen.hyperparameters
        other = body.method.supervised if kind == "dpo" else body.method.dpo
        if other is not None:
            wrong = "supervised" if kind == "dpo" else "dpo"
            raise OpenAIError(400, f"method.{wrong} does not go with method.type '{kind}'", f"method.{wrong}")
    return ("dpo" if kind == "dpo" else "sft"), params


def _training_config(body: CreateFineTuningJob, strategy: str, params: Any, dataset: str) -> common_pb2.TrainingConfig:
    config = common_pb2.TrainingConfig(
        task="text-generation",
        model_name=body.model,
        provider="huggingface",
        strategy=strategy,
        dataset=dataset,
        # OpenAI picks a seed when none is given, and reports it.
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        name=objects.model_name_for(body.model, body.suffix, secrets.token_hex(4)),
    )
    if params is not None:
        if params.n_epochs not in (None, "auto"):
            config.num_train_epochs = float(params.n_epochs)
        if params.batch_size not in (None, "auto"):
            config.per_device_train_batch_size = int(params.batch_size)
        if params.learning_rate_multiplier not in (None, "auto"):
            config.learning_rate = objects.BASE_LEARNING_RATE * float(params.learning_rate_multiplier)
        if getattr(params, "beta", None) not in (None, "auto"):
            config.dpo_beta = float(params.beta)
    return config


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
) -> dict[str, Any]:
    """Queues the job on the durable job path POST /api/jobs uses."""
    if body.integrations:
        kinds = sorted({str(i.get("type")) for i in body.integrations})
        message = f"integrations {kinds} are not supported: ModelForge has no integrations"
        raise OpenAIError(400, message, "integrations")
    if body.metadata:
        raise OpenAIError(400, "metadata is not supported: ModelForge does not store job metadata", "metadata")
    strategy, params = _hyperparameters(body)
    dataset = await _job_file(registry, rpc, body.training_file, "training_file", strategy)
    config = _training_config(body, strategy, params, dataset.filename)
    if body.validation_file is not None:
        evaluation = await _job_file(registry, rpc, body.validation_file, "validation_file", strategy)
        config.eval_dataset = evaluation.filename
    request = trainer_pb2.SubmitTrainingJobRequest(config=config, idempotency_key=idempotency_key or "", owner=owner)
    reply = await trainer.SubmitTrainingJob(request, **rpc.write)
    return objects.job_object(reply.job)


async def _jobs_page(trainer: TrainerStub, rpc: CallOptions, after: str | None, limit: int) -> dict[str, Any]:
    """Newest first, after the job `after` (the registry lists by queue time, so ids page stably)."""
    collected: list[common_pb2.TrainingJob] = []
    found = after is None
    offset = 0
    while len(collected) <= limit:
        reply = await trainer.ListTrainingJobs(
            trainer_pb2.ListTrainingJobsRequest(limit=JOB_PAGE, offset=offset), **rpc.read
        )
        for job in reply.jobs:
            if found:
                collected.append(job)
            elif job.job_id == after:
                found = True
        offset += len(reply.jobs)
        if not reply.jobs or offset >= reply.total:
            break
    return {"jobs": collected[:limit], "has_more": len(collected) > limit}


@router.get("/fine_tuning/jobs")
async def list_jobs(
    trainer: TrainerStub, registry: RegistryStub, rpc: Rpc, after: After = None, limit: Limit = 20
) -> dict[str, Any]:
    found = await _jobs_page(trainer, rpc, after, limit)
    data = await _job_objects(registry, rpc, found["jobs"])
    return {"object": "list", "data": data, "has_more": found["has_more"]}


@router.get("/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: IdPath, trainer: TrainerStub, registry: RegistryStub, rpc: Rpc) -> dict[str, Any]:
    return (await _job_objects(registry, rpc, [await _job(trainer, rpc, job_id)]))[0]


@router.post("/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: IdPath, trainer: TrainerStub, rpc: Rpc) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one stops at its next step."""
    await _job(trainer, rpc, job_id)
    try:
        reply = await trainer.StopTraining(trainer_pb2.StopTrainingRequest(job_id=job_id), **rpc.write)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED):
            raise OpenAIError(409, f"Fine-tuning job {job_id} has already finished and cannot be cancelled.") from exc
        raise
    return objects.job_object(reply.job)


@router.get("/fine_tuning/jobs/{job_id}/events")
async def list_events(
    job_id: IdPath, trainer: TrainerStub, rpc: Rpc, feed: EventFeedDep, after: After = None, limit: Limit = 20
) -> dict[str, Any]:
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
    return {"object": "list", "data": [objects.event_object(e) for e in chosen], "has_more": len(newest_first) > limit}


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
async def list_checkpoints(
    job_id: IdPath, trainer: TrainerStub, registry: RegistryStub, rpc: Rpc, after: After = None, limit: Limit = 10
) -> dict[str, Any]:
    """A finished job's checkpoint: its registered model (the trainer keeps no others once it is registered)."""
    job = await _job(trainer, rpc, job_id)
    model = await _model_or_none(registry, rpc, job.model_id)
    items = [objects.checkpoint_object(job, model)] if model is not None else []
    return objects.page(items, after, limit)


# --- models ------------------------------------------------------------------------------------------


async def _all_models(registry: RegistryStub, rpc: CallOptions) -> list[registry_pb2.Model]:
    reply = await registry.ListModels(registry_pb2.ListModelsRequest(), **rpc.read)
    return list(reply.models)


def _base_objects(models: list[registry_pb2.Model]) -> dict[str, dict[str, Any]]:
    """Base models in use (each registered model's base), created when their first fine-tune was."""
    bases: dict[str, dict[str, Any]] = {}
    for model in sorted(models, key=lambda m: m.created_at.seconds):
        if model.base_model and model.base_model not in bases:
            bases[model.base_model] = objects.model_object(
                model.base_model, objects.seconds(model.created_at) or 0, "system"
            )
    return bases


def _tuned_object(model: registry_pb2.Model) -> dict[str, Any]:
    return objects.model_object(model.model_id, objects.seconds(model.created_at) or 0)


@router.get("/models")
async def list_models(registry: RegistryStub, rpc: Rpc) -> dict[str, Any]:
    models = await _all_models(registry, rpc)
    tuned = [_tuned_object(m) for m in models]
    return {"object": "list", "data": [*_base_objects(models).values(), *tuned]}


async def _registered(registry: RegistryStub, rpc: CallOptions, model_id: str) -> registry_pb2.Model | None:
    if model_id.isdigit():
        return None  # the registry's numeric ids are not OpenAI model ids
    return await _model_or_none(registry, rpc, model_id)


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: IdPath, registry: RegistryStub, rpc: Rpc) -> dict[str, Any]:
    model = await _registered(registry, rpc, model_id)
    if model is not None:
        return _tuned_object(model)
    base = _base_objects(await _all_models(registry, rpc)).get(model_id)
    if base is None:
        raise not_found("model", model_id, "model")
    return base


@router.delete("/models/{model_id:path}")
async def delete_model(
    model_id: IdPath, registry: RegistryStub, inference: InferenceStub, rpc: Rpc, lookups: ModelLookupsDep
) -> dict[str, Any]:
    model = await _registered(registry, rpc, model_id)
    if model is None:
        if model_id in _base_objects(await _all_models(registry, rpc)):
            raise OpenAIError(400, f"{model_id} is a base model; only fine-tuned models can be deleted", "model")
        raise not_found("model", model_id, "model")
    await registry.DeleteModel(registry_pb2.DeleteModelRequest(id=model.model_id), **rpc.write)
    lookups.invalidate()  # the playground's cached lookups (readcache.ModelLookups)
    try:
        await inference.UnloadModel(inference_pb2.UnloadModelRequest(model_id=model.model_id), **rpc.read)
    except grpc.aio.AioRpcError as exc:
        # Best effort, as DELETE /api/models does: the model is gone whatever inference answers.
        log.warning("inference did not unload deleted model %s: %s", model.model_id, exc.code().name)
    return {"id": model.model_id, "object": "model", "deleted": True}


# --- chat and text completions ----------------------------------------------------------------------


async def _serving_model(registry: RegistryStub, rpc: CallOptions, model_id: str) -> registry_pb2.Model:
    model = await _registered(registry, rpc, model_id)
    if model is None:
        if model_id in _base_objects(await _all_models(registry, rpc)):
            raise OpenAIError(
                400, f"{model_id} is a base model; ModelForge serves its fine-tuned models", "model", "model_not_found"
            )
        raise OpenAIError(404, f"The model '{model_id}' does not exist.", "model", "model_not_found")
    if model.task != "text-generation":
        raise OpenAIError(400, f"Model {model_id} was trained for {model.task}, not text generation", "model")
    return model


def _params(body: GenerationBody, max_tokens: int | None) -> inference_pb2.GenerationParams:
    params = inference_pb2.GenerationParams(
        max_new_tokens=max_tokens or 0,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=body.stop_list(),
    )
    if body.seed is not None:
        params.seed = body.seed
    return params


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _finish_reason(reason: str) -> str:
    return reason if reason in ("stop", "length") else "stop"


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


async def _stream(
    inference: InferenceStub,
    rpc: CallOptions,
    call_request: inference_pb2.GenerateStreamRequest,
    chunk: Callable[[str, str | None], dict[str, Any]],
    opening: dict[str, Any] | None,
    include_usage: bool,
    usage_chunk: Callable[[dict[str, int]], dict[str, Any]],
) -> StreamingResponse:
    """SSE chunks ending with `data: [DONE]`. The first piece is read before answering, so a refused
    request gets its status code; a failure later arrives as an `error` object, as OpenAI sends it."""
    call = inference.GenerateStream(call_request, **rpc.generate)
    first = await call.read()

    async def events() -> AsyncIterator[bytes]:
        try:
            if opening is not None:
                yield _sse(opening)
            piece = first
            while piece is not grpc.aio.EOF:
                assert isinstance(piece, inference_pb2.GenerateStreamResponse)
                if piece.text:
                    yield _sse(chunk(piece.text, None))
                if piece.finished:
                    yield _sse(chunk("", _finish_reason(piece.finish_reason)))
                    if include_usage:
                        yield _sse(usage_chunk(_usage(piece.prompt_tokens, piece.tokens_generated)))
                    break
                piece = await call.read()
            yield b"data: [DONE]\n\n"
        except grpc.aio.AioRpcError as exc:
            log.warning("generation stream failed: %s %s", exc.code().name, exc.details())
            yield _sse(openai_error_body(500, f"Generation failed: {exc.code().name}"))
        finally:
            call.cancel()

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.post("/chat/completions")
async def chat_completions(
    body: ChatCompletionBody, registry: RegistryStub, inference: InferenceStub, rpc: Rpc
) -> Any:
    body.check()
    turns = body.turns()
    model = await _serving_model(registry, rpc, body.model)
    params = _params(body, body.token_limit())
    params.messages.extend(inference_pb2.ChatMessage(role=role, content=text) for role, text in turns)
    ident, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    head = {
        "id": ident, "created": created, "model": model.model_id, "system_fingerprint": None,
        "service_tier": None, "moderation": None,
    }
    if body.stream:
        chunk_head = {**head, "object": "chat.completion.chunk", "obfuscation": None, "usage": None}

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            delta = {"content": text} if finish is None else {}
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**chunk_head, "choices": [choice]}

        def usage_chunk(usage: dict[str, int]) -> dict[str, Any]:
            return {**chunk_head, "choices": [], "usage": usage}

        opening_delta = {"role": "assistant", "content": "", "refusal": None}
        opening_choice = {"index": 0, "delta": opening_delta, "finish_reason": None, "logprobs": None}
        opening = {**chunk_head, "choices": [opening_choice]}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        call_request = inference_pb2.GenerateStreamRequest(model=model_ref(model), params=params)
        return await _stream(inference, rpc, call_request, chunk, opening, include_usage, usage_chunk)
    generate = inference_pb2.GenerateRequest(model=model_ref(model), params=params)
    reply = await inference.Generate(generate, **rpc.generate)
    message: dict[str, Any] = {
        "role": "assistant", "content": reply.generated_text, "refusal": None, "annotations": [], "audio": None,
        "function_call": None, "tool_calls": None,
    }
    choice = {"index": 0, "message": message, "finish_reason": _finish_reason(reply.finish_reason), "logprobs": None}
    usage = _usage(reply.prompt_tokens, reply.tokens_generated)
    return {**head, "object": "chat.completion", "choices": [choice], "usage": usage, "metadata": None}


@router.post("/completions")
async def completions(
    body: CompletionBody, registry: RegistryStub, inference: InferenceStub, rpc: Rpc
) -> Any:
    body.check()
    prompt = body.prompt_text()
    if not prompt.strip():
        raise OpenAIError(400, "prompt: must not be empty", "prompt")
    model = await _serving_model(registry, rpc, body.model)
    params = _params(body, body.max_tokens or COMPLETION_MAX_TOKENS)
    params.prompt = prompt
    ident, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
    head = {"id": ident, "created": created, "model": model.model_id, "system_fingerprint": None}
    if body.stream:

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            return {**head, "object": "text_completion", "choices": [choice]}

        def usage_chunk(usage: dict[str, int]) -> dict[str, Any]:
            return {**head, "object": "text_completion", "choices": [], "usage": usage}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        call_request = inference_pb2.GenerateStreamRequest(model=model_ref(model), params=params)
        return await _stream(inference, rpc, call_request, chunk, None, include_usage, usage_chunk)
    generate = inference_pb2.GenerateRequest(model=model_ref(model), params=params)
    reply = await inference.Generate(generate, **rpc.generate)
    finish = _finish_reason(reply.finish_reason)
    choice = {"index": 0, "text": reply.generated_text, "finish_reason": finish, "logprobs": None}
    usage = _usage(reply.prompt_tokens, reply.tokens_generated)
    return {**head, "object": "text_completion", "choices": [choice], "usage": usage}
