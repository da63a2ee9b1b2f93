"""/api/health, /api/info, probes, request ids, deadlines, and dataset upload/listing."""

from __future__ import annotations

import json

import httpx
from gateway_fakes import FakeServices, running_client, settings_for

VALID_ROWS = [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(12)]


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode() + b"\n"


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "version": "v2"}


async def test_info_without_gpu_lists_only_portable_providers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/info")
    assert response.status_code == 200
    assert response.json() == {
        "providers": ["huggingface"],
        "strategies": ["sft", "qlora", "dpo", "rlhf"],
        "tasks": ["text-generation", "summarization", "extractive-question-answering"],
        "version": "v2",
    }


async def test_info_with_cuda_gpu_lists_unsloth(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    fakes.hardware.with_gpu = True
    assert (await client.get("/api/info")).json()["providers"] == ["huggingface", "unsloth"]


async def test_info_still_answers_when_hardware_is_down(fakes: FakeServices) -> None:
    from modelforge_common.testing import free_port

    settings = settings_for(fakes, hardware_addr=f"127.0.0.1:{free_port()}", read_deadline_s=0.5)
    async with running_client(settings) as (_, client):
        response = await client.get("/api/info")
    assert response.status_code == 200
    assert response.json()["providers"] == ["huggingface"]


async def test_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    ready = await client.get("/readyz")
    # The fakes serve, but no NATS listens at the configured address.
    assert ready.status_code == 503
    assert ready.json()["checks"] == {
        "trainer": True,
        "registry": True,
        "hardware": True,
        "inference": True,
        "nats": False,
    }


async def test_request_id_is_echoed_and_forwarded_with_a_deadline(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    response = await client.get("/api/training_status", headers={"x-request-id": "client-id-1"})
    assert response.headers["x-request-id"] == "client-id-1"
    assert fakes.trainer.metadata[-1]["x-request-id"] == "client-id-1"
    remaining = fakes.trainer.timeouts[-1]
    assert remaining is not None and 0 < remaining <= 6


async def test_request_id_is_generated_when_absent_or_unusable(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    generated = await client.get("/api/training_status")
    assert len(generated.headers["x-request-id"]) == 32
    assert fakes.trainer.metadata[-1]["x-request-id"] == generated.headers["x-request-id"]
    replaced = await client.get("/api/health", headers={"x-request-id": "bad id with spaces"})
    assert replaced.headers["x-request-id"] != "bad id with spaces"


async def test_upload_dataset_streams_chunks_and_answers_the_documented_shape(fakes: FakeServices) -> None:
    content = jsonl(VALID_ROWS)
    async with running_client(settings_for(fakes, upload_chunk_bytes=100)) as (_, client):
        response = await client.post(
            "/api/upload_dataset", files={"file": ("dir/train.jsonl", content, "application/jsonl")}
        )
    assert response.status_code == 200
    assert response.json() == {
        "status": "uploaded",
        "filename": "train.jsonl",
        "num_examples": 12,
        "validation": {"valid": True, "errors": []},
    }
    assert len(fakes.registry.upload_messages) > 1
    assert max(fakes.registry.upload_messages) <= 100
    assert sum(fakes.registry.upload_messages) == len(content)


async def test_upload_invalid_rows_is_400_with_line_numbers(client: httpx.AsyncClient) -> None:
    rows: list[dict[str, object]] = list(VALID_ROWS)
    rows[2] = {"prompt": 5, "completion": "x"}
    response = await client.post("/api/upload_dataset", files={"file": ("bad.jsonl", jsonl(rows))})
    assert response.status_code == 400
    body = response.json()
    assert body["status_code"] == 400
    assert {"loc": ["body", "file", "line 3", "prompt"], "msg": "must be a string, got int", "type": "value_error"} in (
        body["detail"]
    )
    assert "Dataset validation failed" in body["error"]


async def test_upload_wrong_extension_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/upload_dataset", files={"file": ("data.csv", b"a,b\n")})
    assert response.status_code == 400
    assert response.json()["detail"] == [{"loc": ["body", "file"], "msg": "must end in .jsonl", "type": "value_error"}]


async def test_upload_without_file_field_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/upload_dataset", files={"other": ("a.jsonl", b"{}")})
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["body", "file"]
    assert response.json()["detail"][0]["type"] == "missing"


async def test_upload_with_broken_multipart_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/upload_dataset",
        content=b"--xyz\r\nContent-Disposition: form-data; name=file; filename=a.jsonl\r\n\r\n{}",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 400
    assert response.json()["status_code"] == 400


async def test_upload_over_the_registry_limit_is_413(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    big = jsonl(VALID_ROWS) * (fakes.registry.MAX_UPLOAD_BYTES // len(jsonl(VALID_ROWS)) + 2)
    response = await client.post("/api/upload_dataset", files={"file": ("big.jsonl", big)})
    assert response.status_code == 413
    assert response.json()["detail"] == "Dataset exceeds the registry's size limit"


async def test_upload_over_the_gateway_limit_is_413_without_calling_the_registry(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, max_upload_bytes=50)) as (_, client):
        response = await client.post("/api/upload_dataset", files={"file": ("train.jsonl", jsonl(VALID_ROWS))})
    assert response.status_code == 413
    assert fakes.registry.upload_messages == []


async def test_list_datasets(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/datasets")).json() == {"datasets": []}
    await client.post("/api/upload_dataset", files={"file": ("train.jsonl", jsonl(VALID_ROWS))})
    datasets = (await client.get("/api/datasets")).json()["datasets"]
    assert datasets == [
        {
            "filename": "train.jsonl",
            "num_examples": 12,
            "size_mb": round(len(jsonl(VALID_ROWS)) / 1024 / 1024, 4),
            "uploaded_at": "2024-03-15T14:30:22Z",
            # What this fake registry stores (the real one's columns, mapping and source: tests/e2e).
            "columns": [],
            "column_mapping": {},
            "source": {},
        }
    ]
