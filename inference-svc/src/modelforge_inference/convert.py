"""Protobuf messages <-> domain objects."""

from __future__ import annotations

from google.protobuf.message import Message

from modelforge.v1 import inference_pb2
from modelforge_inference.domain import ChatMessage, GenerationResult, ModelRef, RequestedParams, StreamChunk


def _present(message: Message, name: str) -> bool:
    """Whether a field was sent: presence for `optional` fields, non-zero for plain proto3 scalars
    (where 0 cannot be told from "not given" and so means "use the default")."""
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.has_presence:
        return message.HasField(name)
    return bool(getattr(message, name))


def model_ref_from_pb(pb: inference_pb2.ModelRef) -> ModelRef:
    return ModelRef(
        model_id=pb.model_id,
        base_model=pb.base_model,
        path=pb.path,
        task=pb.task,
        adapter_type=pb.adapter_type,
        file_sha256=dict(pb.file_sha256),
    )


def params_from_pb(pb: inference_pb2.GenerationParams) -> RequestedParams:
    return RequestedParams(
        prompt=pb.prompt,
        max_new_tokens=pb.max_new_tokens if _present(pb, "max_new_tokens") else None,
        temperature=pb.temperature,
        top_p=pb.top_p if _present(pb, "top_p") else None,
        top_k=pb.top_k if _present(pb, "top_k") else None,
        repetition_penalty=pb.repetition_penalty if _present(pb, "repetition_penalty") else None,
        context=pb.context,
        question=pb.question,
        messages=tuple(ChatMessage(m.role, m.content) for m in pb.messages),
        stop=tuple(pb.stop),
        seed=pb.seed if pb.HasField("seed") else None,
    )


def generate_response_to_pb(result: GenerationResult) -> inference_pb2.GenerateResponse:
    response = inference_pb2.GenerateResponse(
        generated_text=result.generated_text,
        tokens_generated=result.tokens_generated,
        generation_time_ms=result.generation_time_ms,
        prompt_tokens=result.prompt_tokens,
        finish_reason=result.finish_reason,
    )
    if result.score is not None:
        response.score = result.score
    if result.start is not None:
        response.start = result.start
    if result.end is not None:
        response.end = result.end
    return response


def stream_chunk_to_pb(chunk: StreamChunk) -> inference_pb2.GenerateStreamResponse:
    return inference_pb2.GenerateStreamResponse(
        text=chunk.text,
        finished=chunk.finished,
        tokens_generated=chunk.tokens_generated,
        generation_time_ms=chunk.generation_time_ms,
        prompt_tokens=chunk.prompt_tokens,
        finish_reason=chunk.finish_reason,
    )
