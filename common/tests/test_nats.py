"""Training events travel through the JetStream stream and can be replayed by sequence."""

import asyncio

from nats.js.api import DeliverPolicy

from modelforge.v1 import events_pb2
from modelforge_common.nats import (
    EVENT_CONTENT_TYPE,
    TRAINING_STREAM,
    connect,
    ensure_training_stream,
    training_subject,
    training_wildcard,
)
from modelforge_common.testing import nats_server


async def test_events_are_stored_and_replayable() -> None:
    with nats_server() as server:
        nc = await connect(server.url, "test")
        try:
            await ensure_training_stream(nc)
            await ensure_training_stream(nc)  # idempotent
            js = nc.jetstream()
            for seq in (1, 2, 3):
                event = events_pb2.TrainingEvent(job_id="train_a", seq=seq, kind=events_pb2.EVENT_KIND_PROGRESS)
                await js.publish(training_subject("train_a", "progress"), event.SerializeToString(),
                                 headers={"Content-Type": EVENT_CONTENT_TYPE})
            await js.publish(training_subject("train_b", "status"), b"")
            info = await js.stream_info(TRAINING_STREAM)
            assert info.state.messages == 4

            received: list[int] = []
            sub = await js.subscribe(training_wildcard("train_a"), ordered_consumer=True,
                                     deliver_policy=DeliverPolicy.ALL)
            while len(received) < 3:
                msg = await asyncio.wait_for(sub.next_msg(), timeout=5)
                received.append(events_pb2.TrainingEvent.FromString(msg.data).seq)
            assert received == [1, 2, 3]
        finally:
            await nc.close()


def test_subjects() -> None:
    assert training_subject("train_1", "status") == "modelforge.training.train_1.status"
    assert training_wildcard() == "modelforge.training.*.*"
