"""WS /ws/training against a private JetStream nats-server: the initial status, then events
published as protobuf; job filter; heartbeats; NATS down at startup; and the hub's overflow rule."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from fastapi.testclient import TestClient
from gateway_fakes import FakeServices, settings_for
from google.protobuf import timestamp_pb2
from starlette.websockets import WebSocketDisconnect

from modelforge.v1 import common_pb2, events_pb2
from modelforge_common.nats import EVENT_CONTENT_TYPE, TRAINING_STREAM, training_subject
from modelforge_common.testing import NatsServer, free_port, nats_server
from modelforge_gateway.eventhub import EventHub, SharedEvent, event_text
from modelforge_gateway.main import create_app

# A broken feed must fail the test, not hang the suite.
pytestmark = pytest.mark.timeout(60)

KINDS = {
    "status": events_pb2.EVENT_KIND_STATUS,
    "progress": events_pb2.EVENT_KIND_PROGRESS,
    "metric": events_pb2.EVENT_KIND_METRIC,
    "log": events_pb2.EVENT_KIND_LOG,
}


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server() as server:
        yield server.url


def event(job_id: str, seq: int, kind: str = "progress", **fields: Any) -> events_pb2.TrainingEvent:
    return events_pb2.TrainingEvent(
        job_id=job_id,
        kind=KINDS[kind],
        seq=seq,
        timestamp=timestamp_pb2.Timestamp(seconds=1_710_513_022, nanos=250_000_000),
        **fields,
    )


def publish(url: str, *events: events_pb2.TrainingEvent) -> None:
    """Publishes as the trainer does: protobuf bytes into JetStream, one subject per job and kind."""

    async def send() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        for item in events:
            kind = next(name for name, value in KINDS.items() if value == item.kind)
            await js.publish(
                training_subject(item.job_id, kind),
                item.SerializeToString(),
                headers={"content-type": EVENT_CONTENT_TYPE},
            )
        await nc.close()

    asyncio.run(send())


def wait_until_subscribed(client: TestClient, limit_s: float = 30.0) -> None:
    """Polls /readyz until the event feed is subscribed (it connects in the background)."""
    give_up = time.monotonic() + limit_s
    while time.monotonic() < give_up:
        if client.get("/readyz").json()["checks"]["nats"]:
            return
        time.sleep(0.05)
    raise AssertionError("the gateway never subscribed to NATS")


def receive_event(ws: Any) -> dict[str, Any]:
    """The next message that is not a heartbeat."""
    while True:
        message: dict[str, Any] = ws.receive_json()
        if message["type"] != "heartbeat":
            return message


def running_job() -> common_pb2.TrainingJob:
    return common_pb2.TrainingJob(
        job_id="train_1",
        status=common_pb2.JOB_STATUS_RUNNING,
        progress=20.0,
        current_epoch=1,
        total_epochs=3,
        current_step=20,
        total_steps=100,
        loss=1.5,
        message="Training epoch 1/3 - Step 20/100",
        last_seq=3,
    )


def test_initial_status_then_events(fakes: FakeServices, nats_url: str) -> None:
    fakes.trainer.job = running_job()
    app = create_app(settings_for(fakes, nats_url=nats_url))
    with TestClient(app) as client:
        wait_until_subscribed(client)
        assert app.state.event_feed.mode == "jetstream"
        with client.websocket_connect("/ws/training") as ws:
            first = ws.receive_json()
            assert first["type"] == "status"
            assert (first["job_id"], first["seq"], first["status"], first["progress"]) == (
                "train_1",
                3,
                "running",
                20.0,
            )
            assert (first["current_step"], first["total_steps"], first["loss"], first["learning_rate"]) == (
                20,
                100,
                1.5,
                None,
            )
            publish(
                nats_url,
                event("train_1", 3, progress=20.0),  # already part of the initial status: skipped
                event(
                    "train_1",
                    4,
                    status=common_pb2.JOB_STATUS_RUNNING,
                    progress=45.5,
                    current_epoch=2,
                    total_epochs=3,
                    current_step=45,
                    total_steps=100,
                    loss=0.9,
                    learning_rate=2e-4,
                    message="Training epoch 2/3 - Step 45/100",
                ),
                event("train_1", 5, "metric", metrics={"eval_loss": 0.8}),
                event("train_2", 1, "log", message="other job"),
            )
            progress = receive_event(ws)
            assert progress == {
                "type": "progress",
                "job_id": "train_1",
                "seq": 4,
                "timestamp": "2024-03-15T14:30:22.250Z",
                "status": "running",
                "progress": 45.5,
                "current_epoch": 2,
                "total_epochs": 3,
                "current_step": 45,
                "total_steps": 100,
                "loss": 0.9,
                "learning_rate": 2e-4,
                "message": "Training epoch 2/3 - Step 45/100",
                "error": None,
                "metrics": {},
                "model_id": None,
                "epoch": 0.0,
            }
            metric = receive_event(ws)
            assert (metric["type"], metric["seq"], metric["metrics"], metric["status"]) == (
                "metric",
                5,
                {"eval_loss": 0.8},
                None,
            )
            other = receive_event(ws)
            assert (other["type"], other["job_id"], other["message"]) == ("log", "train_2", "other job")


def test_job_filter_and_idle_initial_status(fakes: FakeServices, nats_url: str) -> None:
    app = create_app(settings_for(fakes, nats_url=nats_url))
    with TestClient(app) as client:
        wait_until_subscribed(client)
        with client.websocket_connect("/ws/training") as idle_ws:
            idle = idle_ws.receive_json()
            assert (idle["type"], idle["status"], idle["job_id"]) == ("status", "idle", None)
        fakes.trainer.job = running_job()
        with client.websocket_connect("/ws/training?job_id=train_1") as ws:
            assert ws.receive_json()["job_id"] == "train_1"
            publish(
                nats_url,
                event("train_9", 1, "log"),
                event(
                    "train_1", 7, "status", status=common_pb2.JOB_STATUS_COMPLETED, progress=100.0, model_id="model_1"
                ),
            )
            done = receive_event(ws)
            assert (done["job_id"], done["type"], done["status"], done["model_id"]) == (
                "train_1",
                "status",
                "completed",
                "model_1",
            )


def test_unknown_job_closes_the_socket(fakes: FakeServices, nats_url: str) -> None:
    app = create_app(settings_for(fakes, nats_url=nats_url))
    with TestClient(app) as client, client.websocket_connect("/ws/training?job_id=nope") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008


def test_unreachable_trainer_closes_the_socket_with_try_again_later(fakes: FakeServices, nats_url: str) -> None:
    settings = settings_for(fakes, nats_url=nats_url, trainer_addr=f"127.0.0.1:{free_port()}", read_deadline_s=0.5)
    with TestClient(create_app(settings)) as client, client.websocket_connect("/ws/training") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1013


def test_heartbeat_when_idle(fakes: FakeServices, nats_url: str) -> None:
    app = create_app(settings_for(fakes, nats_url=nats_url, ws_heartbeat_s=0.05))
    with TestClient(app) as client, client.websocket_connect("/ws/training") as ws:
        assert ws.receive_json()["type"] == "status"
        heartbeat = ws.receive_json()
        assert heartbeat["type"] == "heartbeat"
        assert heartbeat["timestamp"].endswith("Z")


def test_rest_works_while_nats_is_down_and_events_flow_once_it_starts(fakes: FakeServices) -> None:
    port = free_port()
    app = create_app(settings_for(fakes, nats_url=f"nats://127.0.0.1:{port}"))
    with TestClient(app) as client, tempfile.TemporaryDirectory(prefix="mf-nats-late-") as store:
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/models").status_code == 200
        assert client.get("/readyz").status_code == 503
        late = NatsServer(port=port, store_dir=Path(store))
        late.start()
        try:
            wait_until_subscribed(client)
            assert client.get("/readyz").status_code == 200
            with client.websocket_connect("/ws/training") as ws:
                ws.receive_json()
                publish(late.url, event("train_5", 1, "log", message="hello"))
                assert receive_event(ws)["message"] == "hello"
        finally:
            late.kill()


def test_feed_subscribes_again_when_nats_restarts_without_its_store(fakes: FakeServices) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as first_store, tempfile.TemporaryDirectory() as second_store:
        first = NatsServer(port=port, store_dir=Path(first_store))
        first.start()
        app = create_app(settings_for(fakes, nats_url=first.url, nats_check_s=0.1))
        try:
            with TestClient(app) as client:
                wait_until_subscribed(client)
                feed = app.state.event_feed
                with client.websocket_connect("/ws/training") as ws:
                    ws.receive_json()
                    publish(first.url, *(event("train_1", seq) for seq in (1, 2, 3)))
                    assert [receive_event(ws)["seq"] for _ in range(3)] == [1, 2, 3]
                first.kill()
                second = NatsServer(port=port, store_dir=Path(second_store))
                first = second
                second.start()
                give_up = time.monotonic() + 30
                while not (feed.subscriptions >= 2 and feed.ready) and time.monotonic() < give_up:
                    time.sleep(0.05)
                assert feed.subscriptions >= 2 and feed.ready
                with client.websocket_connect("/ws/training") as ws:
                    ws.receive_json()
                    publish(second.url, event("train_2", 1, "log", message="after restart"))
                    assert receive_event(ws)["message"] == "after restart"
        finally:
            first.kill()


async def test_hub_drops_a_client_that_falls_behind_without_blocking_others() -> None:
    hub = EventHub(queue_size=2)
    slow = hub.subscribe()
    fast = hub.subscribe()
    for seq in range(1, 4):
        hub.publish({"job_id": "j", "seq": seq})
        await fast.queue.get()
    assert slow.dropped is True
    assert slow.queue.get_nowait() is None  # stop marker, the backlog is gone
    assert fast.dropped is False
    assert len(hub) == 1


async def test_hub_filters_by_job_and_close_stops_everyone() -> None:
    hub = EventHub(queue_size=8)
    only_a = hub.subscribe("a")
    everything = hub.subscribe()
    hub.publish({"job_id": "b", "seq": 1})
    hub.publish({"job_id": "a", "seq": 1})
    assert only_a.queue.get_nowait() == {"job_id": "a", "seq": 1}
    assert everything.queue.qsize() == 2
    hub.close()
    assert only_a.queue.get_nowait() is None
    assert (only_a.dropped, len(hub)) == (False, 0)


async def test_hub_hands_every_subscriber_one_event_whose_text_is_rendered_once() -> None:
    hub = EventHub(queue_size=8)
    first, second = hub.subscribe(), hub.subscribe()
    hub.publish({"job_id": "j", "seq": 1, "message": "épreuve"})
    one, other = first.queue.get_nowait(), second.queue.get_nowait()
    assert isinstance(one, SharedEvent) and one is other
    assert event_text(one) is event_text(other)  # the same string object: encoded once
    assert json.loads(event_text(one)) == {"job_id": "j", "seq": 1, "message": "épreuve"}
    assert event_text({"seq": 2}) == '{"seq":2}'  # a plain dict (replayed history) is encoded on the spot


def test_feed_that_lost_its_consumer_goes_on_after_the_last_event_it_delivered(
    fakes: FakeServices, nats_url: str
) -> None:
    """nats-py recreates an ordered consumer after a reset in the background; when that fails, the
    feed's own check finds the consumer gone and subscribes again. Events stored in between must
    still reach the sockets, once each."""
    app = create_app(settings_for(fakes, nats_url=nats_url, nats_check_s=0.2))
    with TestClient(app) as client:
        wait_until_subscribed(client)
        feed = app.state.event_feed
        with client.websocket_connect("/ws/training") as ws:
            ws.receive_json()
            publish(nats_url, *(event("train_gap", seq) for seq in (1, 2)))
            assert [receive_event(ws)["seq"] for _ in range(2)] == [1, 2]
            subscriptions = feed.subscriptions

            async def lose_consumer_then_publish() -> None:
                nc = await nats.connect(nats_url)
                js = nc.jetstream()
                await js.delete_consumer(TRAINING_STREAM, feed._sub._consumer)
                for seq in (3, 4):
                    await js.publish(
                        training_subject("train_gap", "progress"),
                        event("train_gap", seq).SerializeToString(),
                        headers={"content-type": EVENT_CONTENT_TYPE},
                    )
                await nc.close()

            asyncio.run(lose_consumer_then_publish())
            assert [receive_event(ws)["seq"] for _ in range(2)] == [3, 4]
            assert feed.subscriptions > subscriptions
            publish(nats_url, event("train_gap", 5))
            assert receive_event(ws)["seq"] == 5
