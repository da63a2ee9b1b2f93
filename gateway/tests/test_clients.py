"""clients.watching_status: the trainer stub's GetTrainingStatus hands every reply it returns to a
listener (the read caches learn from it that a job ended) and is otherwise the channel's own call."""

from __future__ import annotations

import grpc
import pytest
from gateway_fakes import FakeServices, settings_for
from test_ws import running_job

from modelforge.v1 import trainer_pb2
from modelforge_gateway.clients import Clients


async def test_every_status_reply_reaches_the_listener_once(fakes: FakeServices) -> None:
    fakes.trainer.job = running_job()
    heard: list[trainer_pb2.GetTrainingStatusResponse] = []
    clients = Clients.open(settings_for(fakes), on_trainer_status=heard.append)
    try:
        request = trainer_pb2.GetTrainingStatusRequest(job_id=fakes.trainer.job.job_id)
        reply = await clients.trainer.GetTrainingStatus(request, timeout=5, metadata=(("x-request-id", "r1"),))
        assert reply.job.job_id == fakes.trainer.job.job_id
        assert heard == [reply]
        # The call object is still the channel's: its status and metadata read as before.
        call = clients.trainer.GetTrainingStatus(request, timeout=5)
        assert (await call).job.job_id == reply.job.job_id
        assert await call.code() is grpc.StatusCode.OK
        assert call.done() and not call.cancelled()
        assert len(heard) == 2
    finally:
        await clients.close()


async def test_a_failed_status_call_tells_the_listener_nothing(fakes: FakeServices) -> None:
    fakes.trainer.fail_status_with = grpc.StatusCode.UNAVAILABLE
    heard: list[trainer_pb2.GetTrainingStatusResponse] = []
    clients = Clients.open(settings_for(fakes), on_trainer_status=heard.append)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await clients.trainer.GetTrainingStatus(trainer_pb2.GetTrainingStatusRequest(), timeout=5)
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        assert heard == []
    finally:
        await clients.close()
