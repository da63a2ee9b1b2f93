"""Playground chat: messages, stop strings and seed reach inference; bad ones are 400s naming the field."""

from __future__ import annotations

import httpx
import pytest
from gateway_fakes import FakeServices


async def test_messages_stop_and_seed_are_passed_to_inference(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    body = {
        "model_id": 1,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "What is ML?"},
        ],
        "stop": ["\nUser:", "###"],
        "seed": 42,
        "max_new_tokens": 5,
    }
    response = await client.post("/api/playground/generate", json=body)
    assert response.status_code == 200
    sent = fakes.inference.requests[-1].params
    assert [(m.role, m.content) for m in sent.messages] == [(m["role"], m["content"]) for m in body["messages"]]
    assert list(sent.stop) == ["\nUser:", "###"]
    assert sent.HasField("seed") and sent.seed == 42
    assert sent.prompt == ""
    streamed = await client.post("/api/playground/stream", json=body)
    assert streamed.status_code == 200
    assert len(fakes.inference.requests[-1].params.messages) == 4


async def test_without_seed_none_is_sent(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    response = await client.post("/api/playground/generate", json={"model_id": 1, "prompt": "hi"})
    assert response.status_code == 200
    assert not fakes.inference.requests[-1].params.HasField("seed")
    assert list(fakes.inference.requests[-1].params.messages) == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"messages": [{"role": "wizard", "content": "x"}]}, ["body", "messages", 0, "role"]),
        ({"messages": [{"role": "user", "content": "hi"}, {"content": "x"}]}, ["body", "messages", 1, "role"]),
        ({"messages": [{"role": "user", "content": "  "}]}, ["body", "messages"]),
        ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "\n"}]}, ["body", "messages"]),
        ({"messages": []}, ["body", "prompt"]),
        ({"messages": [{"role": "user", "content": "hi", "name": "x"}]}, ["body", "messages", 0, "name"]),
        ({"prompt": "hi", "stop": [""]}, ["body", "stop", 0]),
        ({"prompt": "hi", "stop": ["x"] * 17}, ["body", "stop"]),
        ({"prompt": "hi", "seed": "abc"}, ["body", "seed"]),
        ({"prompt": "hi", "messages": "not a list"}, ["body", "messages"]),
    ],
)
async def test_bad_chat_fields_are_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], loc: list[object]
) -> None:
    response = await client.post("/api/playground/generate", json={"model_id": 1, **body})
    assert response.status_code == 400
    # One error, naming the field that is wrong (no second one about a prompt the body did not need).
    assert [entry["loc"] for entry in response.json()["detail"]] == [loc]
