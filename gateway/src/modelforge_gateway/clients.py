"""One gRPC channel per service, opened once per process, and the per-request call options
(deadline by kind of call, x-request-id metadata) every call passes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelforge.v1 import hardware_pb2_grpc, inference_pb2_grpc, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from modelforge_common.grpc_client import make_channel
from modelforge_gateway.settings import GatewaySettings
from modelforge_gateway.upstream.generation_streams import MultiplexedGenerateStream

SERVICES = ("trainer", "registry", "hardware", "inference")
# The channel of the one GenerateStreams call the playground's and OpenAI's streams share.
STREAMS_CHANNEL = "inference-streams"

StatusListener: TypeAlias = Callable[[trainer_pb2.GetTrainingStatusResponse], None]

# The stubs as this gateway holds them: on a grpc.aio channel. mypy-protobuf types those as the
# XAsyncStub classes (awaitable unary calls, streaming calls with read()), which exist only in the
# .pyi files; at run time (FastAPI reads these in route signatures) they are the plain stub classes.
if TYPE_CHECKING:
    TrainerClient: TypeAlias = trainer_pb2_grpc.TrainerServiceAsyncStub
    RegistryClient: TypeAlias = registry_pb2_grpc.RegistryServiceAsyncStub
    HardwareClient: TypeAlias = hardware_pb2_grpc.HardwareServiceAsyncStub
    InferenceClient: TypeAlias = inference_pb2_grpc.InferenceServiceAsyncStub
else:
    TrainerClient = trainer_pb2_grpc.TrainerServiceStub
    RegistryClient = registry_pb2_grpc.RegistryServiceStub
    HardwareClient = hardware_pb2_grpc.HardwareServiceStub
    InferenceClient = inference_pb2_grpc.InferenceServiceStub


StatusRequest: TypeAlias = trainer_pb2.GetTrainingStatusRequest
StatusReply: TypeAlias = trainer_pb2.GetTrainingStatusResponse
CallMetadata: TypeAlias = grpc.aio.Metadata | Sequence[tuple[str, str | bytes]]


class _WatchedStatusCall(grpc.aio.UnaryUnaryCall[StatusRequest, StatusReply]):
    """One GetTrainingStatus call: the channel's own, whose reply is handed to `on_status` as it is
    awaited. Everything else is the call's."""

    def __init__(self, call: grpc.aio.UnaryUnaryCall[StatusRequest, StatusReply], on_status: StatusListener) -> None:
        self._call = call
        self._on_status = on_status

    def __await__(self) -> Generator[None, None, StatusReply]:
        reply = yield from self._call.__await__()
        self._on_status(reply)
        return reply

    def cancelled(self) -> bool:
        return self._call.cancelled()

    def done(self) -> bool:
        return self._call.done()

    def time_remaining(self) -> float | None:
        return self._call.time_remaining()

    def cancel(self) -> bool:
        return self._call.cancel()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._call.add_done_callback(callback)

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        return await self._call.code()

    async def details(self) -> str:
        return await self._call.details()

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()


class StatusWatchingMethod(grpc.aio.UnaryUnaryMultiCallable[StatusRequest, StatusReply]):
    """The stub's GetTrainingStatus with every reply also handed to `on_status`; a multi-callable
    itself, so it takes the stub method's place with its type, and callers use it as before."""

    def __init__(
        self, method: grpc.aio.UnaryUnaryMultiCallable[StatusRequest, StatusReply], on_status: StatusListener
    ) -> None:
        self._method = method
        self._on_status = on_status

    def __call__(
        self,
        request: StatusRequest,
        *,
        timeout: float | None = None,
        metadata: CallMetadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.UnaryUnaryCall[StatusRequest, StatusReply]:
        call = self._method(
            request,
            timeout=timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )
        return _WatchedStatusCall(call, self._on_status)


def watching_status(trainer: TrainerClient, on_status: StatusListener) -> TrainerClient:
    """The trainer stub, with every GetTrainingStatus reply also handed to `on_status` (whatever
    route asked: /api/jobs/{id}, the wizard, the OpenAI jobs). The read caches learn from it that a
    job ended the moment any route could tell a client so (readcache.TrainingStatusView.note_job)."""
    trainer.GetTrainingStatus = StatusWatchingMethod(trainer.GetTrainingStatus, on_status)
    return trainer


@dataclass
class Clients:
    channels: dict[str, grpc.aio.Channel]
    trainer: TrainerClient
    registry: RegistryClient
    hardware: HardwareClient
    inference: InferenceClient
    # GenerateStream's stand-in on `inference` when streams are multiplexed (the default).
    streams: MultiplexedGenerateStream | None = None

    @classmethod
    def open(
        cls,
        settings: GatewaySettings,
        on_trainer_status: StatusListener | None = None,
    ) -> Clients:
        addresses = {
            "trainer": settings.trainer_addr,
            "registry": settings.registry_addr,
            "hardware": settings.hardware_addr,
            "inference": settings.inference_addr,
        }
        channels = {name: make_channel(addr, settings.grpc_max_message_bytes) for name, addr in addresses.items()}
        trainer = trainer_pb2_grpc.TrainerServiceStub(channels["trainer"])
        inference = inference_pb2_grpc.InferenceServiceStub(channels["inference"])
        streams: MultiplexedGenerateStream | None = None
        if settings.inference_streams_multiplexed:
            # Its own connection, without per-call interceptors: each stream carries its request id and
            # trace context in its start message (upstream/generation_streams.py says why).
            channels[STREAMS_CHANNEL] = make_channel(
                settings.inference_addr, settings.grpc_max_message_bytes, intercepted=False
            )
            streams = MultiplexedGenerateStream(
                inference_pb2_grpc.InferenceServiceStub(channels[STREAMS_CHANNEL]).GenerateStreams,
                per_call=inference.GenerateStream,
            )
            inference.GenerateStream = streams
        return cls(
            channels=channels,
            trainer=trainer if on_trainer_status is None else watching_status(trainer, on_trainer_status),
            registry=registry_pb2_grpc.RegistryServiceStub(channels["registry"]),
            hardware=hardware_pb2_grpc.HardwareServiceStub(channels["hardware"]),
            inference=inference,
            streams=streams,
        )

    async def close(self, grace_s: float | None = None) -> None:
        if self.streams is not None:
            self.streams.close()
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
