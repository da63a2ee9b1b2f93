"""POST /api/finetune/estimate_memory: provider, dropout, accumulation and a multi-process job's
world size and distributed mode reach the hardware service; its proposals, parts, largest batch and
settings (distributed included) come back as JSON."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gateway_fakes import FakeServices

from modelforge.v1 import hardware_pb2
from modelforge_gateway.finetune import convert

GIB = 1 << 30


async def test_provider_dropout_and_accumulation_are_forwarded(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    body = {"model_name": "m/m", "strategy": "sft", "provider": "unsloth", "lora_dropout": 0.0,
            "gradient_accumulation_steps": 4}
    response = await client.post("/api/finetune/estimate_memory", json=body)
    assert response.status_code == 200, response.text
    sent = fakes.hardware.estimates[-1]
    assert (sent.provider, sent.gradient_accumulation_steps) == ("unsloth", 4)
    assert sent.HasField("lora_dropout") and sent.lora_dropout == 0.0

    await client.post("/api/finetune/estimate_memory", json={"model_name": "m/m"})
    assert not fakes.hardware.estimates[-1].HasField("lora_dropout")  # unset: the service's default


async def test_bad_provider_dropout_and_accumulation_are_400_naming_the_field(client: httpx.AsyncClient) -> None:
    for field, value in (("provider", "deepspeed"), ("lora_dropout", 1.0), ("gradient_accumulation_steps", 0)):
        response = await client.post("/api/finetune/estimate_memory", json={"model_name": "m/m", field: value})
        assert response.status_code == 400, (field, response.text)
        assert any(field in item["loc"] for item in response.json()["detail"]), response.json()


def test_proposals_parts_and_largest_batch_are_rendered() -> None:
    settings = hardware_pb2.MemorySettings(
        per_device_train_batch_size=2, gradient_accumulation_steps=8, max_seq_length=1024, use_4bit=True,
        gradient_checkpointing=True, provider="huggingface",
    )
    reply = hardware_pb2.EstimateMemoryResponse(
        breakdown=hardware_pb2.MemoryBreakdown(
            weights_bytes=5 * GIB, activations_bytes=3 * GIB, logits_bytes=GIB, overhead_bytes=GIB,
            total_bytes=10 * GIB,
            parts=[
                hardware_pb2.MemoryPart(name="weights", bytes=5 * GIB, detail="NF4"),
                hardware_pb2.MemoryPart(name="activations", bytes=3 * GIB, detail="checkpoints"),
                hardware_pb2.MemoryPart(name="logits", bytes=GIB, detail="tiles"),
                hardware_pb2.MemoryPart(name="CUDA context", bytes=GIB, detail="torch"),
            ],
        ),
        fits=False, available_bytes=8 * GIB, device="cuda:0", message="does not fit", max_batch_size=2,
        proposals=[hardware_pb2.MemoryProposal(
            settings=settings, total_bytes=7 * GIB, description="batch 2 with accumulation 8",
            changed=["per_device_train_batch_size", "gradient_accumulation_steps"],
        )],
        settings=hardware_pb2.MemorySettings(per_device_train_batch_size=16, gradient_accumulation_steps=1),
        provider="huggingface",
    )
    body = convert.memory_estimate("m/m", reply).model_dump()

    assert body["max_batch_size"] == 2
    assert [p["name"] for p in body["largest_parts"]] == ["weights", "activations", "logits"]
    assert body["breakdown"]["logits_gb"] == 1.0
    proposal = body["proposals"][0]
    assert proposal["settings"]["per_device_train_batch_size"] == 2
    assert proposal["changed"] == ["per_device_train_batch_size", "gradient_accumulation_steps"]
    assert proposal["total_gb"] == 7.0
    assert body["settings"]["per_device_train_batch_size"] == 16
    assert body["settings"]["distributed"] == "ddp"  # an empty one: what hardware-svc judged every job as
    assert body["world_size"] == 1


async def test_processes_nodes_and_distributed_reach_the_service_as_world_size(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    body = {"model_name": "m/m", "processes_per_node": 4, "num_nodes": 2, "distributed": "fsdp"}
    response = await client.post("/api/finetune/estimate_memory", json=body)
    assert response.status_code == 200, response.text
    sent = fakes.hardware.estimates[-1]
    assert (sent.world_size, sent.distributed) == (8, "fsdp")
    answer = response.json()
    assert answer["world_size"] == 8
    assert answer["settings"]["distributed"] == "fsdp"


async def test_unset_processes_are_one_process_of_the_services_default_mode(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    response = await client.post("/api/finetune/estimate_memory", json={"model_name": "m/m"})
    assert response.status_code == 200, response.text
    sent = fakes.hardware.estimates[-1]
    assert (sent.world_size, sent.distributed) == (1, "")
    assert response.json()["world_size"] == 1
    assert response.json()["settings"]["distributed"] == "ddp"

    # Only one of the two: the other is 1.
    await client.post("/api/finetune/estimate_memory", json={"model_name": "m/m", "num_nodes": 3})
    assert fakes.hardware.estimates[-1].world_size == 3


async def test_distributed_with_one_process_is_accepted(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    response = await client.post("/api/finetune/estimate_memory", json={"model_name": "m/m", "distributed": "fsdp"})
    assert response.status_code == 200, response.text
    sent = fakes.hardware.estimates[-1]
    assert (sent.world_size, sent.distributed) == (1, "fsdp")


async def test_a_proposal_that_switches_to_fsdp_says_so_in_its_settings(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    # Too large for the fake's 12 GiB: it proposes sharding, as hardware-svc does for several processes.
    body = {"model_name": "m/m", "processes_per_node": 2, "distributed": "ddp", "batch_size": 4096,
            "max_seq_length": 4096}
    response = await client.post("/api/finetune/estimate_memory", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["fits"] is False
    assert answer["settings"]["distributed"] == "ddp"
    [proposal] = answer["proposals"]
    assert proposal["changed"] == ["distributed"]
    assert proposal["settings"]["distributed"] == "fsdp"


# Body validation is 400 here (DESIGN.md section 3), as for every other field of this body.
@pytest.mark.parametrize(("field", "value"), [("processes_per_node", 0), ("processes_per_node", 65),
                                              ("num_nodes", 0), ("num_nodes", 1025), ("distributed", "zero3"),
                                              ("processes_per_node", True), ("num_nodes", "two")])
async def test_bad_processes_nodes_and_distributed_are_400_naming_the_field(
    client: httpx.AsyncClient, fakes: FakeServices, field: str, value: Any
) -> None:
    response = await client.post("/api/finetune/estimate_memory", json={"model_name": "m/m", field: value})
    assert response.status_code == 400, response.text
    assert [item["loc"] for item in response.json()["detail"]] == [["body", field]]
    assert fakes.hardware.estimates == []


async def test_the_openapi_document_bounds_them_as_the_start_request_does(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    estimate, start = schemas["MemoryEstimateRequest"]["properties"], schemas["StartTrainingRequest"]["properties"]
    for name in ("processes_per_node", "num_nodes", "distributed"):
        assert estimate[name]["anyOf"] == start[name]["anyOf"], name
    assert "world_size" in schemas["MemoryEstimateResponse"]["properties"]
    assert "distributed" in schemas["MemorySettingsResponse"]["properties"]
