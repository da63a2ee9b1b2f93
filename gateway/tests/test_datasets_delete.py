"""DELETE /api/datasets/{name}: the registry's answer as HTTP (200, 404, 409), and names that cannot be
a stored dataset refused before any call."""

from __future__ import annotations

import json

import httpx
from gateway_fakes import FakeServices

ROWS = b"".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}).encode() + b"\n" for i in range(12))


async def upload(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/api/upload_dataset", files={"file": (name, ROWS, "application/jsonl")})
    assert response.status_code == 200, response.text


async def test_delete_answers_deleted_then_not_found(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    await upload(client, "chat.jsonl")
    deleted = await client.delete("/api/datasets/chat.jsonl")
    assert deleted.status_code == 200
    assert deleted.json() == {
        "success": True, "status": "deleted", "message": "Dataset chat.jsonl deleted successfully",
        "filename": "chat.jsonl",
    }
    assert (await client.get("/api/datasets")).json() == {"datasets": []}
    again = await client.delete("/api/datasets/chat.jsonl")
    assert again.status_code == 404
    assert "chat.jsonl not found" in again.json()["error"]


async def test_a_dataset_in_use_is_kept_with_409(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    await upload(client, "busy.jsonl")
    fakes.registry.datasets_in_use.add("busy.jsonl")
    refused = await client.delete("/api/datasets/busy.jsonl")
    assert refused.status_code == 409
    assert "unfinished job" in refused.json()["error"]
    assert [d["filename"] for d in (await client.get("/api/datasets")).json()["datasets"]] == ["busy.jsonl"]


async def test_names_no_upload_can_have_are_refused_with_the_field(client: httpx.AsyncClient) -> None:
    for name in ("data.csv", ".hidden.jsonl", "a b.jsonl", "x" * 300 + ".jsonl"):
        response = await client.delete(f"/api/datasets/{name}")
        assert response.status_code == 400, (name, response.text)
        assert "name" in response.text
