"""Playground bodies -> inference requests; inference answers -> the playground's bodies."""

from __future__ import annotations

import json
from typing import Any

from modelforge.v1 import inference_pb2
from modelforge_gateway.playground.models import GenerateRequest, GenerateResponse
from modelforge_gateway.upstream.models import ServedModel


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


def generate_request(model: ServedModel, body: GenerateRequest) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(model=model.ref, params=generation_params(body))


def stream_request(model: ServedModel, body: GenerateRequest) -> inference_pb2.GenerateStreamRequest:
    return inference_pb2.GenerateStreamRequest(model=model.ref, params=generation_params(body))


def generated(model: ServedModel, reply: inference_pb2.GenerateResponse) -> GenerateResponse:
    result = GenerateResponse(
        generated_text=reply.generated_text,
        tokens_generated=reply.tokens_generated,
        generation_time_ms=int(reply.generation_time_ms),
        model_id=model.model_id,
    )
    if reply.finish_reason:  # reported by inference-svc (with the prompt's token count)
        result.prompt_tokens = reply.prompt_tokens
        result.finish_reason = reply.finish_reason
    if reply.HasField("score"):
        result.score = reply.score
    if reply.HasField("start"):
        result.start = reply.start
    if reply.HasField("end"):
        result.end = reply.end
    return result


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def chunk(piece: inference_pb2.GenerateStreamResponse) -> dict[str, Any]:
    """One streamed piece as its SSE data (rendered straight to text: no model per token)."""
    fields: dict[str, Any] = {
        "text": piece.text,
        "finished": piece.finished,
        "tokens_generated": piece.tokens_generated,
        "generation_time_ms": int(piece.generation_time_ms),
    }
    if piece.finished and piece.finish_reason:
        fields["prompt_tokens"] = piece.prompt_tokens
        fields["finish_reason"] = piece.finish_reason
    return fields
