"""The jobs API (queue, idempotency, list filter, cancel, owner) and progress replay: the stored
history, /ws/training?job_id=&since= and the SSE stream, against a private JetStream nats-server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from gateway_fakes import FakeServices, running_client, settings_for
from starlette.websockets import WebSocketDisconnect
from test_ws import event, publish, receive_event, wait_until_subscribed

from modelforge.v1 import common_pb2
from modelforge_common.testing import nats_server
from modelforge_gateway.main import create_app

pytestmark = pytest.mark.timeout(60)

BODY = {"task": "text-generation", "model_name": "tiny", "dataset": "train.jsonl", "max_steps": 3}
KEY = "bob-key-0123456789abcdef"


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server() as server:
        yield server.url


async def test_submit_is_idempotent_and_records_the_owner(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, api_keys=f"bob:{KEY}")) as (_, client):
        auth = {"Authorization": f"Bearer {KEY}"}
        first = await client.post("/api/jobs", json=BODY, headers={**auth, "Idempotency-Key": "k-1"})
        again = await client.post("/api/jobs", json=BODY, headers={**auth, "Idempotency-Key": "k-1"})
        other = await client.post("/api/jobs", json=BODY, headers=auth)
        assert first.status_code == 201, first.text
        assert again.status_code == 200
        assert first.json()["job_id"] == again.json()["job_id"] != other.json()["job_id"]
        job = first.json()
        assert (job["status"], job["owner"], job["config"]["max_steps"]) == ("queued", "bob", 3)
        assert len(fakes.trainer.queued) == 2

        cancelled = await client.post(f"/api/jobs/{job['job_id']}/cancel", headers=auth)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "stopped"
        twice = await client.post(f"/api/jobs/{job['job_id']}/cancel", headers=auth)
        assert twice.status_code == 409

        listed = await client.get("/api/jobs?status=queued", headers=auth)
        assert listed.json()["total"] == 1
        assert [j["job_id"] for j in listed.json()["jobs"]] == [other.json()["job_id"]]
        both = await client.get("/api/jobs?status=queued&status=stopped&limit=1", headers=auth)
        assert both.json()["total"] == 2 and len(both.json()["jobs"]) == 1

        assert (await client.get("/api/jobs/job_999999", headers=auth)).status_code == 404
        assert (await client.get("/api/jobs/bad.id*", headers=auth)).status_code == 404
        assert (await client.get("/api/jobs?status=sleeping", headers=auth)).status_code == 400
        bad_key = await client.post("/api/jobs", json=BODY, headers={**auth, "Idempotency-Key": "has space"})
        assert bad_key.status_code == 400


async def test_history_unavailable_without_nats_is_503(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    job_id = (await client.post("/api/jobs", json=BODY)).json()["job_id"]
    response = await client.get(f"/api/jobs/{job_id}/events")
    assert response.status_code == 503
    assert "unavailable" in response.json()["detail"]


def _job(job_id: str, last_seq: int, status: int = common_pb2.JOB_STATUS_RUNNING) -> common_pb2.TrainingJob:
    return common_pb2.TrainingJob(job_id=job_id, status=status, last_seq=last_seq, message="m")


def _sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        data = [line.removeprefix("data: ") for line in block.splitlines() if line.startswith("data: ")]
        events.append(json.loads(data[0]))
    return events


def test_replay_from_since_then_live_each_seq_once(fakes: FakeServices, nats_url: str) -> None:
    job_id = "train_replay_1"
    fakes.trainer.job = _job(job_id, last_seq=5)
    app = create_app(settings_for(fakes, nats_url=nats_url))
    with TestClient(app) as client:
        wait_until_subscribed(client)  # the feed declares the stream
        publish(nats_url, *(event(job_id, seq, current_step=seq) for seq in range(1, 6)))
        publish(nats_url, event("train_other", 1))
        history = client.get(f"/api/jobs/{job_id}/events?since=2").json()
        assert [e["seq"] for e in history["events"]] == [3, 4, 5]
        assert all(e["job_id"] == job_id for e in history["events"])
        assert client.get("/api/jobs/train_unknown/events").status_code == 404

        with client.websocket_connect(f"/ws/training?job_id={job_id}&since=2") as ws:
            initial = receive_event(ws)
            assert (initial["type"], initial["seq"]) == ("status", 5)
            replayed = [receive_event(ws)["seq"] for _ in range(3)]
            assert replayed == [3, 4, 5]
            # 5 again (a duplicate delivery) is dropped; 6 and 7 arrive live, once.
            publish(nats_url, event(job_id, 5), event(job_id, 6), event(job_id, 7))
            assert [receive_event(ws)["seq"] for _ in range(2)] == [6, 7]

        with client.websocket_connect("/ws/training?since=1") as ws, pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008  # since needs a job id

        fakes.trainer.job = _job(job_id, last_seq=8, status=common_pb2.JOB_STATUS_COMPLETED)
        publish(nats_url, event(job_id, 8, kind="status", status=common_pb2.JOB_STATUS_COMPLETED))
        with client.stream("GET", f"/api/jobs/{job_id}/events/stream", headers={"Last-Event-ID": "5"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            text = "".join(stream.iter_text())
        sse = _sse_events(text)
        assert [e["seq"] for e in sse] == [8, 6, 7, 8]  # current status, then the gap, ending at terminal
        assert sse[-1]["status"] == "completed"
        assert "id: 6\nevent: progress\n" in text
