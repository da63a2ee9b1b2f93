"""gRPC adapter for HardwareService: messages in, domain calls, messages out. Domain errors become
status codes in modelforge_common's interceptor."""

from __future__ import annotations

import grpc

from modelforge.v1 import hardware_pb2, hardware_pb2_grpc
from modelforge_hardware import convert
from modelforge_hardware.service import HardwareService


class HardwareServicer(hardware_pb2_grpc.HardwareServiceServicer):
    def __init__(self, service: HardwareService) -> None:
        self._service = service

    async def GetHardware(  # noqa: N802 - the proto names the method
        self,
        request: hardware_pb2.GetHardwareRequest,
        context: grpc.aio.ServicerContext[hardware_pb2.GetHardwareRequest, hardware_pb2.GetHardwareResponse],
    ) -> hardware_pb2.GetHardwareResponse:
        return hardware_pb2.GetHardwareResponse(hardware=convert.hardware_to_pb(await self._service.hardware()))

    async def GetRecommendations(  # noqa: N802 - the proto names the method
        self,
        request: hardware_pb2.GetRecommendationsRequest,
        context: grpc.aio.ServicerContext[
            hardware_pb2.GetRecommendationsRequest, hardware_pb2.GetRecommendationsResponse
        ],
    ) -> hardware_pb2.GetRecommendationsResponse:
        recommendation, hardware = await self._service.recommendations(request.task)
        return convert.recommendations_to_pb(recommendation, hardware)

    async def EstimateMemory(  # noqa: N802 - the proto names the method
        self,
        request: hardware_pb2.EstimateMemoryRequest,
        context: grpc.aio.ServicerContext[hardware_pb2.EstimateMemoryRequest, hardware_pb2.EstimateMemoryResponse],
    ) -> hardware_pb2.EstimateMemoryResponse:
        answer = await self._service.estimate_memory(convert.memory_request_from_pb(request))
        return convert.memory_answer_to_pb(answer)

    async def DescribeModel(  # noqa: N802 - the proto names the method
        self,
        request: hardware_pb2.DescribeModelRequest,
        context: grpc.aio.ServicerContext[hardware_pb2.DescribeModelRequest, hardware_pb2.DescribeModelResponse],
    ) -> hardware_pb2.DescribeModelResponse:
        return await self._service.describe_model(request.model_name)
