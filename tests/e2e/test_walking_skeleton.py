"""Issue 2's thin slice through the real processes: HTTP -> gateway -> gRPC -> trainer child process ->
NATS -> WebSocket, then registry, playground generation and deletion."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets

from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TERMINAL = ("completed", "error", "stopped")


def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        response = client.post("/api/upload_dataset", files={"file": (path.name, handle, "application/jsonl")})
    assert response.status_code == 200, response.text
    return response.json()


def training_body(model: Path, dataset_name: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "task": "text-generation", "model_name": str(model), "provider": "huggingface", "strategy": "sft",
        "dataset": dataset_name, "num_train_epochs": 1, "per_device_train_batch_size": 2, "max_seq_length": 64,
        "learning_rate": 1e-3,
    }
    body.update(overrides)
    return body


async def collect_events(ws_url: str, job_id: str, limit_s: float = 300) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with websockets.connect(f"{ws_url}?job_id={job_id}") as socket:
        async with asyncio.timeout(limit_s):
            async for raw in socket:
                event = json.loads(raw)
                if event.get("job_id") != job_id:
                    continue
                events.append(event)
                if event["type"] == "status" and event["status"] in TERMINAL:
                    return events
    return events


def wait_for_status(client: httpx.Client, wanted: tuple[str, ...], timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get("/api/training_status").json()
        if status["status"] in wanted:
            return status
        time.sleep(0.2)
    raise AssertionError(f"status never reached {wanted}: {status}")


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.gateway_url, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def dataset_name(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_jsonl(text_generation_rows(24, seed=3), tmp_path_factory.mktemp("data") / "chat.jsonl")
    uploaded = upload(client, path)
    assert uploaded["status"] == "uploaded"
    assert uploaded["num_examples"] == 24
    assert uploaded["validation"] == {"valid": True, "errors": []}
    return uploaded["filename"]


def test_health_and_info(client: httpx.Client) -> None:
    assert client.get("/api/health").json() == {"status": "healthy", "version": "v2"}
    info = client.get("/api/info").json()
    assert set(info) >= {"providers", "strategies", "tasks", "version"}
    assert "text-generation" in info["tasks"]


def test_fine_tune_end_to_end(stack: Stack, client: httpx.Client, tiny_causal_model: Path, dataset_name: str) -> None:
    datasets = client.get("/api/datasets").json()["datasets"]
    assert any(d["filename"] == dataset_name and d["num_examples"] == 24 for d in datasets)

    started = client.post("/api/start_training", json=training_body(tiny_causal_model, dataset_name, max_steps=6))
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["status"] == "started" and body["message"] == "Training started successfully"
    job_id = body["job_id"]

    ws_url = stack.gateway_url.replace("http://", "ws://") + "/ws/training"
    events = asyncio.run(collect_events(ws_url, job_id))
    progress = [e for e in events if e["type"] == "progress" and isinstance(e.get("loss"), int | float)]
    assert progress, events
    final = events[-1]
    assert final["status"] == "completed", final
    assert final["model_id"]
    seqs = [e["seq"] for e in events if e.get("seq")]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))

    status = client.get("/api/training_status").json()
    assert status["status"] == "completed" and status["progress"] == 100

    listed = client.get("/api/models").json()["models"]
    model = next(m for m in listed if m["model_id"] == final["model_id"])
    assert isinstance(model["id"], int)
    details = client.get(f"/api/models/{model['id']}").json()
    assert details == client.get(f"/api/models/{model['model_id']}").json()
    for metric in ("final_loss", "eval_loss", "perplexity"):
        assert isinstance(details["metrics"][metric], float)
    assert details["task"] == "text-generation" and details["strategy"] == "sft"
    assert details["training_params"]["learning_rate"] == pytest.approx(1e-3)
    model_path = Path(details["path"])
    assert model_path.is_dir()

    generated = client.post("/api/playground/generate", json={
        "model_id": model["id"], "prompt": "Where does the red fox live?", "max_new_tokens": 8, "temperature": 0})
    assert generated.status_code == 200, generated.text
    answer = generated.json()
    assert isinstance(answer["generated_text"], str)
    assert 0 < answer["tokens_generated"] <= 8
    assert answer["generation_time_ms"] >= 0

    # Issue 5: the other seed endpoint, and the SSE stream joining to the same greedy text.
    greedy = {"model_id": model["model_id"], "prompt": "Where does the red fox live?", "max_length": 12,
              "temperature": 0}
    whole = client.post("/api/playground/new", json=greedy)
    assert whole.status_code == 200, whole.text
    assert whole.json()["prompt"] == greedy["prompt"]
    pieces = []
    with client.stream("POST", "/api/playground/stream", json=greedy) as streamed:
        assert streamed.status_code == 200
        for line in streamed.iter_lines():
            if line.startswith("data: "):
                pieces.append(json.loads(line[len("data: "):]))
    assert len(pieces) > 1 and pieces[-1]["finished"] is True
    assert "".join(p["text"] for p in pieces) == whole.json()["generated_text"]
    bad = client.post("/api/playground/generate", json={**greedy, "prompt": ""})
    assert bad.status_code == 400, bad.text

    deleted = client.delete(f"/api/models/{model['model_id']}")
    assert deleted.status_code == 200 and deleted.json()["success"] is True
    assert not model_path.exists()
    assert client.get(f"/api/models/{model['id']}").status_code == 404


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"this is not json\n", "not valid JSON"),
        (b'{"prompt": "a", "completion": "b"}\n[1, 2]\n', "must be a JSON object"),
        (b"", "empty"),
    ],
)
def test_bad_uploads_are_refused_and_store_nothing(client: httpx.Client, content: bytes, fragment: str) -> None:
    before = client.get("/api/datasets").json()["datasets"]
    response = client.post("/api/upload_dataset", files={"file": ("bad.jsonl", content, "application/jsonl")})
    assert response.status_code == 400, response.text
    assert fragment in json.dumps(response.json())
    assert client.get("/api/datasets").json()["datasets"] == before


@pytest.mark.parametrize(
    ("overrides", "loc_field", "fragment"),
    [
        ({"task": "xyz"}, "task", "Invalid task: xyz"),
        ({"dataset": "missing.jsonl"}, "dataset", "not found"),
        ({"learning_rate": -0.1}, "learning_rate", ""),
    ],
)
def test_bad_start_requests_get_400(
    client: httpx.Client, tiny_causal_model: Path, dataset_name: str, overrides: dict, loc_field: str, fragment: str
) -> None:
    response = client.post("/api/start_training", json=training_body(tiny_causal_model, dataset_name, **overrides))
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert any(loc_field in item["loc"] and fragment in item["msg"] for item in detail), detail


def training_child(stack: Stack) -> psutil.Process:
    trainer = psutil.Process(stack.running()["trainer"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = trainer.children(recursive=True)
        if children:
            return children[0]
        time.sleep(0.1)
    raise AssertionError("no training child process appeared")


def test_second_start_conflicts_and_kill_9_marks_error(
    stack: Stack, client: httpx.Client, tiny_causal_model: Path, dataset_name: str
) -> None:
    long_run = training_body(tiny_causal_model, dataset_name, max_steps=5000)
    first = client.post("/api/start_training", json=long_run)
    assert first.status_code == 200, first.text
    second = client.post("/api/start_training", json=long_run)
    assert second.status_code == 409, second.text

    training_child(stack).send_signal(signal.SIGKILL)
    status = wait_for_status(client, ("error",))
    v1 = client.get("/api/finetune/status").json()
    assert v1["status"] == "error" and v1["error"]

    # The service survived: the next job runs to completion.
    assert stack.running().get("trainer")
    again = client.post("/api/start_training", json=training_body(tiny_causal_model, dataset_name, max_steps=2))
    assert again.status_code == 200, again.text
    assert wait_for_status(client, ("completed", "error"))["status"] == "completed", status


def test_stop_training(stack: Stack, client: httpx.Client, tiny_causal_model: Path, dataset_name: str) -> None:
    assert client.post("/api/stop_training").status_code == 409
    started = client.post("/api/start_training", json=training_body(tiny_causal_model, dataset_name, max_steps=5000))
    assert started.status_code == 200, started.text
    wait_for_status(client, ("training",))
    stopped = client.post("/api/stop_training")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json() == {"status": "stopped", "message": "Training stopped successfully"}
    assert wait_for_status(client, ("stopped",))["status"] == "stopped"
