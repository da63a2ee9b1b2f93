"""Hardware-svc reads several slices make: the machine's hardware, the recommendations for a task."""

from __future__ import annotations

from modelforge.v1 import hardware_pb2
from modelforge_gateway.clients import CallOptions, HardwareClient


async def hardware_info(hardware: HardwareClient, rpc: CallOptions) -> hardware_pb2.HardwareInfo:
    reply = await hardware.GetHardware(hardware_pb2.GetHardwareRequest(), **rpc.read)
    return reply.hardware


async def task_recommendations(
    hardware: HardwareClient, rpc: CallOptions, task: str
) -> hardware_pb2.GetRecommendationsResponse:
    return await hardware.GetRecommendations(hardware_pb2.GetRecommendationsRequest(task=task), **rpc.read)
