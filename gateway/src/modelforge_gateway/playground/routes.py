"""Playground: generate with a registered model, whole or streamed as Server-Sent Events.

The gateway looks the model up in the registry and hands inference a ModelRef (path, base model,
adapter type and file hashes), so inference never trusts a client-supplied path.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from modelforge.v1 import inference_pb2
from modelforge_gateway.deps import InferenceStub, ModelLookupsDep, RegistryStub, Rpc
from modelforge_gateway.errors import error_body, request_id_of, rpc_error_response, service_addresses
from modelforge_gateway.playground.convert import chunk, generate_request, generated, sse, stream_request
from modelforge_gateway.playground.models import (
    GenerateRequest,
    GenerateResponse,
    ModelPathResponse,
    PlaygroundNewResponse,
)
from modelforge_gateway.sse import EventStreamResponse
from modelforge_gateway.upstream.models import fetch_model, serving_model

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/playground", tags=["playground"])

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _generate(
    body: GenerateRequest, registry: RegistryStub, inference: InferenceStub, rpc: Rpc, lookups: ModelLookupsDep
) -> GenerateResponse:
    model = await serving_model(registry, rpc, lookups, str(body.model_id))
    reply = await inference.Generate(generate_request(model, body), **rpc.generate)
    return generated(model, reply)


@router.post("/generate", response_model=GenerateResponse, response_model_exclude_none=True)
async def generate(
    body: GenerateRequest, registry: RegistryStub, inference: InferenceStub, rpc: Rpc, lookups: ModelLookupsDep
) -> GenerateResponse:
    return await _generate(body, registry, inference, rpc, lookups)


@router.post("/new", response_model=PlaygroundNewResponse, response_model_exclude_none=True)
async def new(
    body: GenerateRequest, registry: RegistryStub, inference: InferenceStub, rpc: Rpc, lookups: ModelLookupsDep
) -> PlaygroundNewResponse:
    """responses.md's generate: `max_length` is the number of new tokens; the prompt is echoed."""
    answer = await _generate(body, registry, inference, rpc, lookups)
    return PlaygroundNewResponse(**answer.model_dump(), prompt=body.prompt)


@router.get("/model_path", response_model=ModelPathResponse)
async def model_path(
    registry: RegistryStub, rpc: Rpc, model_id: str = Query(min_length=1, max_length=300)
) -> ModelPathResponse:
    model = await fetch_model(registry, rpc, model_id)
    return ModelPathResponse(model_path=model.path, model_id=model.model_id)


@router.post(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream(
    body: GenerateRequest,
    request: Request,
    registry: RegistryStub,
    inference: InferenceStub,
    rpc: Rpc,
    lookups: ModelLookupsDep,
) -> EventStreamResponse:
    """One `data:` event per text piece ({text, finished, tokens_generated, generation_time_ms}); the
    last has finished=true and adds prompt_tokens and finish_reason. Errors before the first piece
    answer with their HTTP status; a failure mid-stream arrives as an `event: error` carrying the
    usual error body."""
    model = await serving_model(registry, rpc, lookups, str(body.model_id))
    call = inference.GenerateStream(stream_request(model, body), **rpc.generate)
    # Read the first piece here so a refused request (bad params, altered artifact) gets its status.
    first = await call.read()
    request_id = request_id_of(request)

    async def events() -> AsyncIterator[bytes]:
        try:
            piece = first
            while piece is not grpc.aio.EOF:
                assert isinstance(piece, inference_pb2.GenerateStreamResponse)
                yield sse(chunk(piece))
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

    return EventStreamResponse(events(), headers=STREAM_HEADERS)
