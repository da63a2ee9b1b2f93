"""The shared bootstrap as a client sees it: health, reflection, and domain errors mapped to status codes."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelforge.v1 import trainer_pb2, trainer_pb2_grpc
from modelforge_common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from modelforge_common.grpc_client import make_channel, violations_of
from modelforge_common.grpc_server import build_server, mark_serving, service_name


class RaisingTrainer(trainer_pb2_grpc.TrainerServiceServicer):
    async def StartTraining(self, request, context):  # noqa: N802 - gRPC method name
        task = request.config.task
        if task == "bad":
            raise InvalidArgument("invalid", [FieldViolation("task", "Invalid task: bad"),
                                              FieldViolation("dataset/line 3/prompt", "must not be empty")])
        if task == "busy":
            raise FailedPrecondition("A training job is already running: train_1")
        if task == "boom":
            raise RuntimeError("secret internal detail")
        return trainer_pb2.StartTrainingResponse()

    async def GetTrainingStatus(self, request, context):  # noqa: N802
        raise NotFound(f"job {request.job_id} not found")


@pytest.fixture
async def channel():
    name = service_name(trainer_pb2, "TrainerService")
    server, port, health = build_server(
        [(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, RaisingTrainer(), name)], "127.0.0.1:0"
    )
    await server.start()
    await mark_serving(health, [name])
    async with make_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(0)


async def start(channel, task: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trainer_pb2_grpc.TrainerServiceStub(channel).StartTraining(
            trainer_pb2.StartTrainingRequest(config={"task": task}), timeout=5
        )
    return info.value


async def test_invalid_argument_carries_field_violations(channel) -> None:
    error = await start(channel, "bad")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in violations_of(error)] == [
        ("task", "Invalid task: bad"), ("dataset/line 3/prompt", "must not be empty")]


async def test_domain_errors_map_to_codes(channel) -> None:
    assert (await start(channel, "busy")).code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trainer_pb2_grpc.TrainerServiceStub(channel).GetTrainingStatus(
            trainer_pb2.GetTrainingStatusRequest(job_id="x"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "job x not found"


async def test_unknown_errors_become_internal_without_details(channel) -> None:
    error = await start(channel, "boom")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (error.details() or "")
    assert violations_of(error) == []


async def test_health_and_reflection_are_registered(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "modelforge.v1.TrainerService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in reply.list_services_response.service}
        assert {"modelforge.v1.TrainerService", "grpc.health.v1.Health"} <= names
        break
