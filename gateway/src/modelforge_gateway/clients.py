"""One gRPC channel per service, opened once per process, and the per-request call options
(deadline by kind of call, x-request-id metadata) every call passes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelforge.v1 import hardware_pb2_grpc, inference_pb2_grpc, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from modelforge_common.grpc_client import make_channel
from modelforge_gateway.settings import GatewaySettings

SERVICES = ("trainer", "registry", "hardware", "inference")


class TrainerStubWatchingStatus(trainer_pb2_grpc.TrainerServiceStub):
    """The trainer stub, with every GetTrainingStatus reply also handed to `on_status` (whatever
    route asked: /api/jobs/{id}, the wizard, the OpenAI jobs). The read caches learn from it that a
    job ended the moment any route could tell a client so (readcache.TrainingStatusView.note_job)."""

    def __init__(
        self, channel: grpc.aio.Channel, on_status: Callable[[trainer_pb2.GetTrainingStatusResponse], None]
    ) -> None:
        super().__init__(channel)
        ask = self.GetTrainingStatus

        async def get_training_status(
            request: trainer_pb2.GetTrainingStatusRequest, **kwargs: Any
        ) -> trainer_pb2.GetTrainingStatusResponse:
            reply: trainer_pb2.GetTrainingStatusResponse = await ask(request, **kwargs)
            on_status(reply)
            return reply

        self.GetTrainingStatus = get_training_status  # type: ignore[assignment,method-assign]


@dataclass
class Clients:
    channels: dict[str, grpc.aio.Channel]
    trainer: trainer_pb2_grpc.TrainerServiceStub
    registry: registry_pb2_grpc.RegistryServiceStub
    hardware: hardware_pb2_grpc.HardwareServiceStub
    inference: inference_pb2_grpc.InferenceServiceStub

    @classmethod
    def open(
        cls,
        settings: GatewaySettings,
        on_trainer_status: Callable[[trainer_pb2.GetTrainingStatusResponse], None] | None = None,
    ) -> Clients:
        addresses = {
            "trainer": settings.trainer_addr,
            "registry": settings.registry_addr,
            "hardware": settings.hardware_addr,
            "inference": settings.inference_addr,
        }
        channels = {name: make_channel(addr, settings.grpc_max_message_bytes) for name, addr in addresses.items()}
        return cls(
            channels=channels,
            trainer=(
                trainer_pb2_grpc.TrainerServiceStub(channels["trainer"])
                if on_trainer_status is None
                else TrainerStubWatchingStatus(channels["trainer"], on_trainer_status)
            ),
            registry=registry_pb2_grpc.RegistryServiceStub(channels["registry"]),
            hardware=hardware_pb2_grpc.HardwareServiceStub(channels["hardware"]),
            inference=inference_pb2_grpc.InferenceServiceStub(channels["inference"]),
        )

    async def close(self, grace_s: float | None = None) -> None:
        await asyncio.gather(*(channel.close(grace_s) for channel in self.channels.values()))

    async def serving(self, timeout_s: float) -> dict[str, bool]:
        """Whether each service answers the standard health check as SERVING."""

        async def check(channel: grpc.aio.Channel) -> bool:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        results = await asyncio.gather(*(check(self.channels[name]) for name in SERVICES))
        return dict(zip(SERVICES, results, strict=True))


@dataclass(frozen=True)
class CallOptions:
    """Keyword arguments for a stub call: a deadline for the kind of call plus the request id."""

    settings: GatewaySettings
    request_id: str

    def _kwargs(self, timeout_s: float) -> dict[str, Any]:
        return {"timeout": timeout_s, "metadata": (("x-request-id", self.request_id),)}

    @property
    def read(self) -> dict[str, Any]:
        return self._kwargs(self.settings.read_deadline_s)

    @property
    def write(self) -> dict[str, Any]:
        return self._kwargs(self.settings.write_deadline_s)

    @property
    def generate(self) -> dict[str, Any]:
        return self._kwargs(self.settings.generate_deadline_s)

    @property
    def hub(self) -> dict[str, Any]:
        return self._kwargs(self.settings.hub_deadline_s)

    @property
    def merge(self) -> dict[str, Any]:
        return self._kwargs(self.settings.merge_deadline_s)

    @property
    def push(self) -> dict[str, Any]:
        return self._kwargs(self.settings.push_deadline_s)
