"""GET /api/compare: two to five models side by side (curves from their lineage, the settings that
differ); bad queries are 400s naming the parameter, an unknown model a 404 naming it. The real
registry's models: tests/e2e/test_data_and_tracking.py."""

from __future__ import annotations

import httpx
from gateway_fakes import FakeServices
from google.protobuf import struct_pb2

from modelforge.v1 import registry_pb2
from modelforge_gateway.compare.convert import comparison


def lineage(learning_rate: float, losses: list[float], dataset: str = "chat.jsonl") -> registry_pb2.Lineage:
    config = struct_pb2.Struct()
    config.update({"learning_rate": learning_rate, "max_steps": len(losses), "lora_r": 64, "seed": 3})
    return registry_pb2.Lineage(
        config=config,
        dataset=registry_pb2.LineageDataset(filename=dataset, sha256="cd" * 32),
        loss_curve=[
            registry_pb2.LossPoint(step=step, loss=loss, learning_rate=learning_rate, epoch=step / len(losses))
            for step, loss in enumerate(losses, start=1)
        ],
    )


async def test_two_models_side_by_side(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    fakes.registry.models[1].lineage.CopyFrom(lineage(1e-3, [2.0, 1.5, 1.2]))
    fakes.registry.models[2].lineage.CopyFrom(lineage(5e-4, [2.1, 1.9]))
    fakes.registry.models[2].lineage.job.status = "completed"
    response = await client.get("/api/compare", params=[("model", "1"), ("model", "model_20240315_143022")])
    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["model_id"] for m in body["models"]] == ["model_20240315_143021", "model_20240315_143022"]
    first, second = body["models"]
    assert [(p["step"], p["loss"]) for p in first["loss_curve"]] == [(1, 2.0), (2, 1.5), (3, 1.2)]
    assert [p["learning_rate"] for p in second["loss_curve"]] == [5e-4, 5e-4]
    assert first["metrics"] == {"final_loss": 0.234, "perplexity": 1.263}
    assert second["status"] == "completed"
    rows = {row["name"]: row for row in body["settings"]}
    assert rows["learning_rate"] == {"name": "learning_rate", "values": [1e-3, 5e-4], "differs": True}
    assert rows["max_steps"]["values"] == [3, 2]
    # The fake's two models differ in task, but share base, strategy, lora_r and seed.
    assert rows["task"]["values"] == ["text-generation", "summarization"]
    assert not rows["lora_r"]["differs"] and not rows["seed"]["differs"] and not rows["base_model"]["differs"]
    assert body["differing"] == ["task", "learning_rate", "max_steps"]


def test_numbers_through_a_struct_compare_equal() -> None:
    one = {"id": 1, "model_id": "a", "name": "a", "base_model": "b", "config": {"lora_r": 16.0}, "metrics": {}}
    two = {**one, "id": 2, "model_id": "b", "config": {"lora_r": 16, "tracking_url": "http://mlflow/#/runs/1"}}
    result = comparison([(one, None), (two, None)])
    assert result.differing == []
    assert [m.tracking_url for m in result.models] == [None, "http://mlflow/#/runs/1"]
    assert result.models[0].loss_curve == []


async def test_bad_comparisons_are_400_naming_the_parameter(client: httpx.AsyncClient) -> None:
    for params in ([("model", "1")], [("model", str(n)) for n in range(1, 7)], []):
        response = await client.get("/api/compare", params=params)
        assert response.status_code == 400, response.text
        assert response.json()["detail"][0]["loc"][:2] == ["query", "model"], response.text
    twice = await client.get("/api/compare", params=[("model", "1"), ("model", "model_20240315_143021")])
    assert twice.status_code == 400
    assert twice.json()["detail"] == [
        {"loc": ["query", "model"], "msg": "names the same model twice: compare different models",
         "type": "value_error"}
    ]
    blank = await client.get("/api/compare", params=[("model", "1"), ("model", " ")])
    assert blank.status_code == 400 and blank.json()["detail"][0]["loc"] == ["query", "model", 1]
    unknown = await client.get("/api/compare", params=[("model", "1"), ("model", "nope")])
    assert unknown.status_code == 404
    assert "Model nope not found" in unknown.text


def test_the_mapping_fields_the_document_declares_are_the_formats_fields() -> None:
    from modelforge_common.dataset_rows import mappable_fields
    from modelforge_gateway.datasets.models import MappableField

    assert set(MappableField.__args__) == set(mappable_fields())
