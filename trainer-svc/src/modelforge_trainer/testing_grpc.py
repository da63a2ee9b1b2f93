"""A fake RegistryService over gRPC for component tests (kept apart from testing.py, which needs no grpc)."""

from __future__ import annotations

from pathlib import Path

import grpc

from modelforge.v1 import registry_pb2, registry_pb2_grpc


class FakeRegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """RegistryService with GetDataset over a dict and RegisterModel recording each call."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.registered: list[registry_pb2.Model] = []

    async def GetDataset(  # noqa: N802 - gRPC method name
        self,
        request: registry_pb2.GetDatasetRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetDatasetRequest, registry_pb2.GetDatasetResponse],
    ) -> registry_pb2.GetDatasetResponse:
        path = self.files.get(request.name)
        if path is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Dataset {request.name} not found")
        assert path is not None
        return registry_pb2.GetDatasetResponse(
            dataset=registry_pb2.Dataset(filename=request.name, path=str(path), valid=True)
        )

    async def RegisterModel(  # noqa: N802 - gRPC method name
        self,
        request: registry_pb2.RegisterModelRequest,
        context: grpc.aio.ServicerContext[registry_pb2.RegisterModelRequest, registry_pb2.RegisterModelResponse],
    ) -> registry_pb2.RegisterModelResponse:
        model = registry_pb2.Model()
        model.CopyFrom(request.model)
        model.id = len(self.registered) + 1
        model.model_id = f"model_test_{model.id}"
        self.registered.append(model)
        return registry_pb2.RegisterModelResponse(model=model)
