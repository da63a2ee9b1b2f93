"""The publisher against a fake NATS connection: buffering, ordering, retries, the bounded buffer."""

from __future__ import annotations

import asyncio
from typing import Any

from modelforge.v1 import events_pb2
from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.nats import EVENT_CONTENT_TYPE
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.convert import encode_event
from modelforge_trainer.jobs import JobRegistry
from modelforge_trainer.publisher import NatsEventPublisher


class FakeJetStream:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection

    async def add_stream(self, config: Any) -> None:
        self.connection.streams.append(config.name)

    async def publish(self, subject: str, payload: bytes, **options: Any) -> None:
        if self.connection.failures_left > 0:
            self.connection.failures_left -= 1
            raise TimeoutError("no ack")
        self.connection.published.append((subject, payload, options["headers"]))
        self.connection.changed.set()


class FakeConnection:
    def __init__(self, failures: int = 0) -> None:
        self.is_connected = True
        self.is_closed = False
        self.failures_left = failures
        self.streams: list[str] = []
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.changed = asyncio.Event()

    def jetstream(self) -> FakeJetStream:
        return FakeJetStream(self)

    async def close(self) -> None:
        self.is_closed = True

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(30):
            while len(self.published) < count:
                self.changed.clear()
                await self.changed.wait()


def events(count: int):
    request = TrainingConfig(task="text-generation", model_name="org/m", dataset="d")
    job = JobRegistry().create(
        request, resolve(request, Hyperparameters(), model_name="org/m", local_model=False, dataset_path="/d")
    )
    first = [job.mark_running()]
    return first + [job.log(f"line {i}") for i in range(count - 1)]


async def test_events_wait_for_nats_and_go_out_in_order() -> None:
    connection = FakeConnection(failures=2)
    attempts = 0

    async def connect() -> FakeConnection:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise OSError("connection refused")
        return connection

    publisher = NatsEventPublisher(connect, encode_event, retry_s=0.01)
    batch = events(5)
    for event in batch:
        publisher.publish(event)  # before the publisher even runs: nothing is lost
    publisher.start()
    await connection.wait_for(5)
    await publisher.close()

    # The stream is (re)declared after each failed publish, in case NATS restarted without it.
    assert connection.streams == ["TRAINING"] * 3
    subjects = [subject for subject, _, _ in connection.published]
    job_id = batch[0].job_id
    assert subjects == [f"modelforge.training.{job_id}.status"] + [f"modelforge.training.{job_id}.log"] * 4
    decoded = [events_pb2.TrainingEvent.FromString(payload) for _, payload, _ in connection.published]
    assert [e.seq for e in decoded] == [1, 2, 3, 4, 5]
    headers = connection.published[0][2]
    assert headers == {"Content-Type": EVENT_CONTENT_TYPE, "Nats-Msg-Id": f"{job_id}:1"}
    assert connection.is_closed


async def test_a_full_buffer_drops_the_oldest_events() -> None:
    connection = FakeConnection()

    async def connect() -> FakeConnection:
        return connection

    publisher = NatsEventPublisher(connect, encode_event, buffer_size=3)
    for event in events(5):
        publisher.publish(event)
    assert publisher.pending == 3
    publisher.start()
    await connection.wait_for(3)
    await publisher.close()
    seqs = [events_pb2.TrainingEvent.FromString(payload).seq for _, payload, _ in connection.published]
    assert seqs == [3, 4, 5]
