"""gRPC adapter for InferenceService: converts messages and calls the domain service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import grpc

from modelforge.v1 import inference_pb2, inference_pb2_grpc
from modelforge_common.stream_session import StreamsSession
from modelforge_inference.convert import (
    generate_response_to_pb,
    model_ref_from_pb,
    params_from_pb,
    stream_chunk_to_pb,
)
from modelforge_inference.publishing import ModelPublisher
from modelforge_inference.service import InferenceService


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, service: InferenceService, publisher: ModelPublisher) -> None:
        self.service = service
        self.publisher = publisher

    async def Generate(  # noqa: N802 - gRPC method name
        self,
        request: inference_pb2.GenerateRequest,
        context: grpc.aio.ServicerContext[inference_pb2.GenerateRequest, inference_pb2.GenerateResponse],
    ) -> inference_pb2.GenerateResponse:
        result = await self.service.generate(model_ref_from_pb(request.model), params_from_pb(request.params))
        return generate_response_to_pb(result)

    async def GenerateStream(  # noqa: N802 - gRPC method name
        self,
        request: inference_pb2.GenerateStreamRequest,
        context: grpc.aio.ServicerContext[inference_pb2.GenerateStreamRequest, inference_pb2.GenerateStreamResponse],
    ) -> AsyncIterator[inference_pb2.GenerateStreamResponse]:
        async with contextlib.aclosing(self._stream(request)) as pieces:
            async for piece in pieces:
                yield piece

    async def GenerateStreams(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[inference_pb2.GenerateStreamsRequest],
        context: grpc.aio.ServicerContext[inference_pb2.GenerateStreamsRequest, inference_pb2.GenerateStreamsResponse],
    ) -> AsyncIterator[inference_pb2.GenerateStreamsResponse]:
        async for message in StreamsSession(self._stream).responses(request_iterator):
            yield message

    async def _stream(
        self, request: inference_pb2.GenerateStreamRequest
    ) -> AsyncGenerator[inference_pb2.GenerateStreamResponse, None]:
        """What GenerateStream yields for `request`, and each stream of GenerateStreams."""
        chunks = self.service.generate_stream(model_ref_from_pb(request.model), params_from_pb(request.params))
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield stream_chunk_to_pb(chunk)

    async def UnloadModel(  # noqa: N802 - gRPC method name
        self,
        request: inference_pb2.UnloadModelRequest,
        context: grpc.aio.ServicerContext[inference_pb2.UnloadModelRequest, inference_pb2.UnloadModelResponse],
    ) -> inference_pb2.UnloadModelResponse:
        return inference_pb2.UnloadModelResponse(unloaded=await self.service.unload(request.model_id))

    async def MergeAdapter(  # noqa: N802 - gRPC method name
        self,
        request: inference_pb2.MergeAdapterRequest,
        context: grpc.aio.ServicerContext[inference_pb2.MergeAdapterRequest, inference_pb2.MergeAdapterResponse],
    ) -> inference_pb2.MergeAdapterResponse:
        merged = await self.publisher.merge(model_ref_from_pb(request.model), request.output_path)
        return inference_pb2.MergeAdapterResponse(
            path=str(merged.path), file_sha256=merged.file_sha256, size_bytes=merged.size_bytes
        )

    async def PushToHub(  # noqa: N802 - gRPC method name
        self,
        request: inference_pb2.PushToHubRequest,
        context: grpc.aio.ServicerContext[inference_pb2.PushToHubRequest, inference_pb2.PushToHubResponse],
    ) -> inference_pb2.PushToHubResponse:
        pushed = await self.publisher.push(
            model_ref_from_pb(request.model),
            request.repo_name,
            private=request.private,
            merge=request.merge,
            commit_message=request.commit_message,
        )
        return inference_pb2.PushToHubResponse(
            repo_id=pushed.repo_id, repo_url=pushed.repo_url, commit_url=pushed.commit_url
        )
