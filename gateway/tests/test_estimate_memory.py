"""POST /api/finetune/estimate_memory: provider, dropout and accumulation reach the hardware service;
its proposals, parts and largest batch come back as JSON."""

from __future__ import annotations

import httpx
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
