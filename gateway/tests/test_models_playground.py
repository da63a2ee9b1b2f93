"""Models (DESIGN 3 union shapes, both list forms, delete) and the playground (generate, new,
model_path, SSE stream), against the registry and inference fakes."""

from __future__ import annotations

import json

import httpx
import pytest
from gateway_fakes import FakeServices

SUMMARY_FIELDS = {
    "id",
    "model_id",
    "name",
    "base_model",
    "task",
    "strategy",
    "provider",
    "created_at",
    "size_mb",
    "path",
}


async def test_models_envelope_and_bare_list(client: httpx.AsyncClient) -> None:
    envelope = await client.get("/api/models", follow_redirects=False)
    bare = await client.get("/api/models/", follow_redirects=False)
    assert (envelope.status_code, bare.status_code) == (200, 200)
    assert list(envelope.json()) == ["models", "total"]
    assert envelope.json()["total"] == len(bare.json())
    assert isinstance(bare.json(), list)
    assert envelope.json()["models"] == bare.json()
    first = bare.json()[0]
    assert set(first) == SUMMARY_FIELDS
    assert first == {
        "id": 1,
        "model_id": "model_20240315_143021",
        "name": "tiny-llama-1",
        "base_model": "/data/models/tiny-llama",
        "task": "text-generation",
        "strategy": "qlora",
        "provider": "huggingface",
        "created_at": "2024-03-15T14:30:22Z",
        "size_mb": 450.5,
        "path": "/data/models/model_1",
    }


@pytest.mark.parametrize("key", ["1", "model_20240315_143021"])
async def test_model_details_by_either_id(client: httpx.AsyncClient, key: str) -> None:
    response = await client.get(f"/api/models/{key}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= SUMMARY_FIELDS | {"config", "training_params", "metrics"}
    assert body["id"] == 1
    # Struct numbers come back as ints where they are integral (lora_r 64, not 64.0).
    assert body["config"] == {"lora_r": 64, "lora_alpha": 128, "num_train_epochs": 3, "learning_rate": 2e-4}
    assert isinstance(body["config"]["lora_r"], int)
    assert body["training_params"] == {"num_epochs": 3, "batch_size": 4, "learning_rate": 2e-4}
    assert body["metrics"] == {"final_loss": 0.234, "perplexity": 1.263}


async def test_unknown_model_is_404_with_the_spec_message(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/models/model_xyz")
    assert response.status_code == 404
    assert response.json()["detail"] == "Model model_xyz not found"
    assert response.json()["status_code"] == 404


async def test_models_by_task(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/models/task/summarization")
    assert [m["id"] for m in response.json()] == [2]
    assert (await client.get("/api/models/task/extractive-question-answering")).json() == []
    assert (await client.get("/api/models/task/xyz")).status_code == 400


async def test_delete_model_answers_the_union_and_unloads(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    response = await client.delete("/api/models/1")
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "status": "deleted",
        "message": "Model model_20240315_143021 deleted successfully",
        "model_id": "model_20240315_143021",
    }
    assert fakes.inference.unloaded == ["model_20240315_143021"]
    assert (await client.get("/api/models/1")).status_code == 404
    again = await client.delete("/api/models/1")
    assert again.status_code == 404
    assert again.json()["detail"] == "Model 1 not found"


async def test_delete_succeeds_when_inference_cannot_unload(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    fakes.inference.unload_fails = True
    response = await client.delete("/api/models/model_20240315_143022")
    assert response.status_code == 200
    assert response.json()["status"] == "deleted"


async def test_generate_passes_a_model_ref_from_the_registry(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    body = {
        "model_id": 1,
        "prompt": "What is machine learning?",
        "max_new_tokens": 100,
        "temperature": 0.7,
        "top_p": 0.9,
    }
    response = await client.post("/api/playground/generate", json=body)
    assert response.status_code == 200
    assert response.json() == {
        "generated_text": "Echo of What is machine learning?",
        "tokens_generated": 6,
        "generation_time_ms": 12,
        "model_id": "model_20240315_143021",
    }
    sent = fakes.inference.requests[-1]
    assert (sent.model.model_id, sent.model.path, sent.model.base_model, sent.model.adapter_type) == (
        "model_20240315_143021",
        "/data/models/model_1",
        "/data/models/tiny-llama",
        "lora",
    )
    assert sent.model.task == "text-generation"
    assert dict(sent.model.file_sha256) == {"adapter_model.safetensors": "ab" * 32}
    assert (sent.params.max_new_tokens, sent.params.top_p) == (100, pytest.approx(0.9))


async def test_playground_new_maps_max_length_and_echoes_the_prompt(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    body = {"model_id": "model_20240315_143021", "prompt": "a b c d e", "max_length": 3}
    response = await client.post("/api/playground/new", json=body)
    assert response.status_code == 200
    assert response.json()["prompt"] == "a b c d e"
    assert response.json()["generated_text"] == "Echo of a"
    assert fakes.inference.requests[-1].params.max_new_tokens == 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 5000}, "max_new_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
async def test_bad_generation_params_are_400(client: httpx.AsyncClient, change: dict[str, object], field: str) -> None:
    response = await client.post("/api/playground/generate", json={"model_id": 1, "prompt": "hi", **change})
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["body", field]


async def test_generate_unknown_model_is_404_and_altered_artifact_409(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    missing = await client.post("/api/playground/generate", json={"model_id": 42, "prompt": "hi"})
    assert missing.status_code == 404
    assert missing.json()["detail"] == "Model 42 not found"
    fakes.registry.models[1].file_sha256["adapter_model.safetensors"] = "tampered"
    altered = await client.post("/api/playground/generate", json={"model_id": 1, "prompt": "hi"})
    assert altered.status_code == 409
    assert "changed since registration" in altered.json()["detail"]


async def test_model_path(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/playground/model_path", params={"model_id": "1"})
    assert response.json() == {"model_path": "/data/models/model_1", "model_id": "model_20240315_143021"}
    missing_param = await client.get("/api/playground/model_path")
    assert missing_param.status_code == 400
    assert missing_param.json()["detail"][0]["loc"] == ["query", "model_id"]


def sse_events(text: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in text.strip().split("\n\n"):
        kind, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
        events.append((kind, json.loads(data)))
    return events


async def test_stream_sends_server_sent_events(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", "/api/playground/stream", json={"model_id": 1, "prompt": "one two"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = (await response.aread()).decode()
    events = sse_events(text)
    assert [kind for kind, _ in events] == ["message"] * 4
    assert "".join(str(data["text"]) for _, data in events) == "Echo of one two"
    assert [data["finished"] for _, data in events] == [False, False, False, True]
    assert events[-1][1]["tokens_generated"] == 4


async def test_stream_errors_before_and_during_streaming(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    missing = await client.post("/api/playground/stream", json={"model_id": 9, "prompt": "x"})
    assert missing.status_code == 404
    fakes.inference.fail_stream_after = 2
    response = await client.post("/api/playground/stream", json={"model_id": 1, "prompt": "one two"})
    assert response.status_code == 200
    events = sse_events(response.text)
    assert [kind for kind, _ in events] == ["message", "message", "error"]
    assert events[-1][1]["status_code"] == 503
    assert events[-1][1]["detail"] == "inference backend went away"
