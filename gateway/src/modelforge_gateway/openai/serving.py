"""The OpenAI-compatible API under /v1, its serving half: models, chat and text completions (the
router is included by routes.py, under its /v1 prefix)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated

import grpc
from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse

from modelforge.v1 import inference_pb2, registry_pb2
from modelforge_gateway.clients import CallOptions
from modelforge_gateway.deps import (
    InferenceStub,
    ModelLookupsDep,
    RegistryStub,
    Rpc,
)
from modelforge_gateway.openai import convert, objects
from modelforge_gateway.openai.responses import (
    ChatChoice,
    ChatChunk,
    ChatChunkChoice,
    ChatCompletion,
    ChatDelta,
    ChatMessage,
    Deleted,
    FinishReason,
    ModelList,
    ModelObject,
    TextChoice,
    TextChunk,
    TextCompletion,
    TextUsageChunk,
    Usage,
    UsageDict,
)
from modelforge_gateway.openai.schemas import ChatCompletionBody, CompletionBody
from modelforge_gateway.openai_errors import OpenAIError, not_found, openai_error_body
from modelforge_gateway.readcache import ModelLookups
from modelforge_gateway.upstream.models import (
    ServedModel,
    delete_registered_model,
    list_registered_models,
    registered_model_or_none,
    serving_model_or_none,
    unload_from_inference,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["openai"], include_in_schema=False)

IdPath = Annotated[str, Path(min_length=1, max_length=300)]
# Completions' default max_tokens is OpenAI's; chat leaves the length to the inference service's default.
COMPLETION_MAX_TOKENS = 16


# --- models ------------------------------------------------------------------------------------------


async def _all_models(registry: RegistryStub, rpc: CallOptions) -> list[registry_pb2.Model]:
    return await list_registered_models(registry, rpc)


def _base_objects(models: list[registry_pb2.Model]) -> dict[str, ModelObject]:
    """Base models in use (each registered model's base), created when their first fine-tune was."""
    bases: dict[str, ModelObject] = {}
    for model in sorted(models, key=lambda m: m.created_at.seconds):
        if model.base_model and model.base_model not in bases:
            bases[model.base_model] = objects.model_object(
                model.base_model, objects.seconds(model.created_at) or 0, "system"
            )
    return bases


def _tuned_object(model: registry_pb2.Model) -> ModelObject:
    return objects.model_object(model.model_id, objects.seconds(model.created_at) or 0)


@router.get("/models")
async def list_models(registry: RegistryStub, rpc: Rpc) -> ModelList:
    models = await _all_models(registry, rpc)
    tuned = [_tuned_object(m) for m in models]
    return ModelList(data=[*_base_objects(models).values(), *tuned])


async def _registered(registry: RegistryStub, rpc: CallOptions, model_id: str) -> registry_pb2.Model | None:
    if model_id.isdigit():
        return None  # the registry's numeric ids are not OpenAI model ids
    return await registered_model_or_none(registry, rpc, model_id)


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: IdPath, registry: RegistryStub, rpc: Rpc) -> ModelObject:
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
) -> Deleted:
    model = await _registered(registry, rpc, model_id)
    if model is None:
        if model_id in _base_objects(await _all_models(registry, rpc)):
            raise OpenAIError(400, f"{model_id} is a base model; only fine-tuned models can be deleted", "model")
        raise not_found("model", model_id, "model")
    await delete_registered_model(registry, rpc, model.model_id)
    lookups.invalidate()  # the cached lookups of the playground and the completions (readcache.ModelLookups)
    try:
        await unload_from_inference(inference, rpc, model.model_id)
    except grpc.aio.AioRpcError as exc:
        # Best effort, as DELETE /api/models does: the model is gone whatever inference answers.
        log.warning("inference did not unload deleted model %s: %s", model.model_id, exc.code().name)
    return Deleted(id=model.model_id, object="model")


# --- chat and text completions ----------------------------------------------------------------------


async def _serving_model(
    registry: RegistryStub, rpc: CallOptions, lookups: ModelLookups[ServedModel], model_id: str
) -> ServedModel:
    """The model a completion names, through the playground's per-replica lookup cache
    (readcache.ModelLookups): concurrent requests for one model share one registry GetModel."""
    model = None if model_id.isdigit() else await serving_model_or_none(registry, rpc, lookups, model_id)
    if model is None:
        if model_id in _base_objects(await _all_models(registry, rpc)):
            raise OpenAIError(
                400, f"{model_id} is a base model; ModelForge serves its fine-tuned models", "model", "model_not_found"
            )
        raise OpenAIError(404, f"The model '{model_id}' does not exist.", "model", "model_not_found")
    if model.ref.task != "text-generation":
        raise OpenAIError(400, f"Model {model_id} was trained for {model.ref.task}, not text generation", "model")
    return model


def _usage(prompt_tokens: int, completion_tokens: int) -> UsageDict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _finish_reason(reason: str) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _sse(data: Mapping[str, object]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


async def _stream(
    inference: InferenceStub,
    rpc: CallOptions,
    call_request: inference_pb2.GenerateStreamRequest,
    chunk: Callable[[str, FinishReason | None], Mapping[str, object]],
    opening: Mapping[str, object] | None,
    include_usage: bool,
    usage_chunk: Callable[[UsageDict], Mapping[str, object]],
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


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(
    body: ChatCompletionBody, registry: RegistryStub, inference: InferenceStub, rpc: Rpc, lookups: ModelLookupsDep
) -> ChatCompletion | StreamingResponse:
    body.check()
    turns = body.turns()
    model = await _serving_model(registry, rpc, lookups, body.model)
    params = convert.generation_params(body, body.token_limit(), turns=turns)
    ident, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    if body.stream:

        def chunk_with(choices: list[ChatChunkChoice], usage: UsageDict | None = None) -> ChatChunk:
            return {
                "id": ident,
                "created": created,
                "model": model.model_id,
                "system_fingerprint": None,
                "service_tier": None,
                "moderation": None,
                "object": "chat.completion.chunk",
                "obfuscation": None,
                "usage": usage,
                "choices": choices,
            }

        def chunk(text: str, finish: FinishReason | None) -> ChatChunk:
            delta: ChatDelta = {"content": text} if finish is None else {}
            return chunk_with([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])

        def usage_chunk(usage: UsageDict) -> ChatChunk:
            return chunk_with([], usage)

        opening = chunk_with([{
            "index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "finish_reason": None,
            "logprobs": None,
        }])
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        call_request = convert.stream_request(model.ref, params)
        return await _stream(inference, rpc, call_request, chunk, opening, include_usage, usage_chunk)
    generate = convert.generate_request(model.ref, params)
    reply = await inference.Generate(generate, **rpc.generate)
    choice = ChatChoice(
        message=ChatMessage(content=reply.generated_text), finish_reason=_finish_reason(reply.finish_reason)
    )
    usage = Usage(**_usage(reply.prompt_tokens, reply.tokens_generated))
    return ChatCompletion(id=ident, created=created, model=model.model_id, choices=[choice], usage=usage)


@router.post("/completions", response_model=TextCompletion)
async def completions(
    body: CompletionBody, registry: RegistryStub, inference: InferenceStub, rpc: Rpc, lookups: ModelLookupsDep
) -> TextCompletion | StreamingResponse:
    body.check()
    prompt = body.prompt_text()
    if not prompt.strip():
        raise OpenAIError(400, "prompt: must not be empty", "prompt")
    model = await _serving_model(registry, rpc, lookups, body.model)
    params = convert.generation_params(body, body.max_tokens or COMPLETION_MAX_TOKENS, prompt=prompt)
    ident, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
    if body.stream:

        def chunk(text: str, finish: FinishReason | None) -> TextChunk:
            return {
                "id": ident, "created": created, "model": model.model_id, "system_fingerprint": None,
                "object": "text_completion",
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            }

        def usage_chunk(usage: UsageDict) -> TextUsageChunk:
            return {
                "id": ident, "created": created, "model": model.model_id, "system_fingerprint": None,
                "object": "text_completion", "choices": [], "usage": usage,
            }

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        call_request = convert.stream_request(model.ref, params)
        return await _stream(inference, rpc, call_request, chunk, None, include_usage, usage_chunk)
    generate = convert.generate_request(model.ref, params)
    reply = await inference.Generate(generate, **rpc.generate)
    choice = TextChoice(text=reply.generated_text, finish_reason=_finish_reason(reply.finish_reason))
    usage = Usage(**_usage(reply.prompt_tokens, reply.tokens_generated))
    return TextCompletion(id=ident, created=created, model=model.model_id, choices=[choice], usage=usage)
