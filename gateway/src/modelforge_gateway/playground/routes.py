"""Playground: generate with a registered model, whole or streamed as Server-Sent Events.

The gateway looks the model up in the registry and hands inference a ModelRef (path, base model,
adapter type and file hashes), so inference never trusts a client-supplied path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from modelforge.v1 import inference_pb2
from modelforge_gateway.convert import model_ref
from modelforge_gateway.deps import InferenceStub, RegistryStub, Rpc
from modelforge_gateway.errors import error_body, request_id_of, rpc_error_response, service_addresses
from modelforge_gateway.routes.models import fetch_model
from modelforge_gateway.schemas import (
    GenerateRequest,
    GenerateResponse,
    ModelPathResponse,
    PlaygroundNewResponse,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/playground", tags=["playground"])


def generation_params(body: GenerateRequest) -> inference_pb2.GenerationParams:
    params = inference_pb2.GenerationParams(
        prompt=body.prompt,
        max_new_tokens=body.tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        context=body.context,
        question=body.question,
        messages=[inference_pb2.ChatMessage(role=m.role, content=m.content) for m in body.messages],
        stop=body.stop,
    )
    if body.seed is not None:
        params.seed = body.seed
    if body.top_k is not None:
        params.top_k = body.top_k
    if body.repetition_penalty is not None:
        params.repetition_penalty = body.repetition_penalty
    return params


async def _generate(
    body: GenerateRequest, registry: RegistryStub, inference: InferenceStub, rpc: Rpc
) -> dict[str, Any]:
    model = await fetch_model(registry, rpc, str(body.model_id))
    request = inference_pb2.GenerateRequest(model=model_ref(model), params=generation_params(body))
    reply = await inference.Generate(request, **rpc.generate)
    result: dict[str, Any] = {
        "generated_text": reply.generated_text,
        "tokens_generated": reply.tokens_generated,
        "generation_time_ms": int(reply.generation_time_ms),
        "model_id": model.model_id,
    }
    if reply.finish_reason:  # reported by inference-svc (with the prompt's token count)
        result["prompt_tokens"] = reply.prompt_tokens
        result["finish_reason"] = reply.finish_reason
    for name in ("score", "start", "end"):
        if reply.HasField(name):
            result[name] = getattr(reply, name)
    return result


@router.post("/generate", response_model=GenerateResponse, response_model_exclude_none=True)
async def generate(
    body: GenerateRequest, registry: RegistryStub, inference: InferenceStub, rpc: Rpc
) -> GenerateResponse:
    return GenerateResponse(**await _generate(body, registry, inference, rpc))


@router.post("/new", response_model=PlaygroundNewResponse, response_model_exclude_none=True)
async def new(
    body: GenerateRequest, registry: RegistryStub, inference: InferenceStub, rpc: Rpc
) -> PlaygroundNewResponse:
    """responses.md's generate: `max_length` is the number of new tokens; the prompt is echoed."""
    return PlaygroundNewResponse(**await _generate(body, registry, inference, rpc), prompt=body.prompt)


@router.get("/model_path", response_model=ModelPathResponse)
async def model_path(
    registry: RegistryStub, rpc: Rpc, model_id: str = Query(min_length=1, max_length=300)
) -> ModelPathResponse:
    model = await fetch_model(registry, rpc, model_id)
    return ModelPathResponse(model_path=model.path, model_id=model.model_id)


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _chunk(piece: inference_pb2.GenerateStreamResponse) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "text": piece.text,
        "finished": piece.finished,
        "tokens_generated": piece.tokens_generated,
        "generation_time_ms": int(piece.generation_time_ms),
    }
    if piece.finished and piece.finish_reason:
        chunk["prompt_tokens"] = piece.prompt_tokens
        chunk["finish_reason"] = piece.finish_reason
    return chunk


@router.post(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream(
    body: GenerateRequest, request: Request, registry: RegistryStub, inference: InferenceStub, rpc: Rpc
) -> StreamingResponse:
    """One `data:` event per text piece ({text, finished, tokens_generated, generation_time_ms}); the
    last has finished=true and adds prompt_tokens and finish_reason. Errors before the first piece
    answer with their HTTP status; a failure mid-stream arrives as an `event: error` carrying the
    usual error body."""
    model = await fetch_model(registry, rpc, str(body.model_id))
    call = inference.GenerateStream(
        inference_pb2.GenerateStreamRequest(model=model_ref(model), params=generation_params(body)), **rpc.generate
    )
    # Read the first piece here so a refused request (bad params, altered artifact) gets its status.
    first = await call.read()
    request_id = request_id_of(request)

    async def events() -> AsyncIterator[bytes]:
        try:
            piece = first
            while piece is not grpc.aio.EOF:
                assert isinstance(piece, inference_pb2.GenerateStreamResponse)
                yield sse(_chunk(piece))
                if piece.finished:
                    break
                piece = await call.read()
        except grpc.aio.AioRpcError as exc:
            _, payload = rpc_error_response(exc, request.url.path, request_id, service_addresses(request))
            yield sse(payload, event="error")
        except Exception:
            log.exception("stream failed")
            yield sse(error_body(500, "An internal error occurred", request_id), event="error")
        finally:
            call.cancel()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
