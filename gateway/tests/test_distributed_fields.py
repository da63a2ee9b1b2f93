"""Issue 19's request fields on the gateway: declared with the trainer's bounds (400 naming the field,
nothing reaches the trainer), in the OpenAPI document, and passed on in the TrainingConfig."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gateway_fakes import FakeServices

BODY = {"task": "text-generation", "model_name": "m", "dataset": "train.jsonl"}


async def test_the_fields_reach_the_trainer(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    response = await client.post("/api/start_training", json={**BODY, "processes_per_node": 4, "num_nodes": 2,
                                                               "distributed": "fsdp"})
    assert response.status_code == 200, response.text
    [config] = fakes.trainer.started
    assert (config.processes_per_node, config.num_nodes, config.distributed) == (4, 2, "fsdp")


async def test_unset_fields_stay_unset(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    response = await client.post("/api/start_training", json=BODY)
    assert response.status_code == 200, response.text
    [config] = fakes.trainer.started
    assert not config.HasField("processes_per_node") and not config.HasField("distributed")


@pytest.mark.parametrize(("field", "value"), [("processes_per_node", 0), ("processes_per_node", 65),
                                              ("num_nodes", 0), ("num_nodes", 1025), ("distributed", "zero3")])
async def test_values_outside_the_bounds_are_400_naming_the_field(
    client: httpx.AsyncClient, fakes: FakeServices, field: str, value: Any
) -> None:
    response = await client.post("/api/start_training", json={**BODY, field: value})
    assert response.status_code == 400, response.text
    assert [item["loc"] for item in response.json()["detail"]] == [["body", field]]
    assert fakes.trainer.started == []


async def test_the_openapi_document_declares_them(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for model in ("StartTrainingRequest", "WizardStartTrainingRequest"):
        properties = document["components"]["schemas"][model]["properties"]
        processes = properties["processes_per_node"]["anyOf"][0]
        assert (processes["minimum"], processes["maximum"]) == (1, 64)
        nodes = properties["num_nodes"]["anyOf"][0]
        assert (nodes["minimum"], nodes["maximum"]) == (1, 1024)
        assert properties["distributed"]["anyOf"][0]["enum"] == ["ddp", "fsdp"]
