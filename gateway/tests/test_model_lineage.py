"""Model lineage over REST (details, /lineage with its reproduce body), the dataset digest check of
start_training, and the listing's query validation, against the registry and trainer fakes."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from gateway_fakes import FakeServices, make_model

from modelforge.v1 import registry_pb2
from modelforge_gateway.deps import get_registry

DATASET_SHA = "cd" * 32


def lineage_message() -> registry_pb2.Lineage:
    lineage = registry_pb2.Lineage(
        base_model=registry_pb2.LineageBaseModel(name="/data/models/tiny-llama", local=True, config_sha256="ab" * 32),
        dataset=registry_pb2.LineageDataset(
            filename="train.jsonl",
            path="/data/datasets/train.jsonl",
            sha256=DATASET_SHA,
            num_rows=12,
            train_rows=10,
            eval_rows=2,
            eval_split=0.1,
            seed=42,
        ),
        task="text-generation",
        strategy="sft",
        provider="huggingface",
        environment=registry_pb2.LineageEnvironment(versions={"torch": "2.13.0"}, device="cpu", python="3.12.3"),
        job=registry_pb2.LineageJob(job_id="train_3", duration_s=9.5, status="completed", owner="alice"),
        metrics={"final_loss": 1.25},
        loss_curve=[
            registry_pb2.LossPoint(step=1, loss=2.0, learning_rate=1e-4, epoch=0.5),
            registry_pb2.LossPoint(step=2, loss=1.5, epoch=1.0),
        ],
    )
    lineage.config.update(
        {
            "num_train_epochs": 1,
            "learning_rate": 0.0002,
            "seed": 42,
            "name": "mine",
            "lr_scheduler_type": "cosine",
            "max_steps": -1,
            "dataset_path": "/x",
            "device": "cpu",
        }
    )
    lineage.job.queued_at.FromSeconds(1_700_000_000)
    lineage.job.started_at.FromSeconds(1_700_000_001)
    return lineage


def add_trained_model(fakes: FakeServices) -> registry_pb2.Model:
    model = make_model(3)
    model.lineage.CopyFrom(lineage_message())
    fakes.registry.models[3] = model
    return model


async def test_details_carry_the_lineage_beside_the_documented_fields(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    model = add_trained_model(fakes)
    body = (await client.get(f"/api/models/{model.model_id}")).json()
    assert body["metrics"] == {"final_loss": 0.234, "perplexity": 1.263}  # documented fields untouched
    lineage = body["lineage"]
    assert lineage["dataset"] == {
        "filename": "train.jsonl",
        "path": "/data/datasets/train.jsonl",
        "sha256": DATASET_SHA,
        "num_rows": 12,
        "train_rows": 10,
        "eval_rows": 2,
        "eval_split": 0.1,
        "seed": 42,
    }
    assert lineage["base_model"] == {
        "name": "/data/models/tiny-llama",
        "local": True,
        "config_sha256": "ab" * 32,
        "revision": None,
    }
    assert lineage["job"] == {
        "job_id": "train_3",
        "queued_at": "2023-11-14T22:13:20.000Z",
        "started_at": "2023-11-14T22:13:21.000Z",
        "finished_at": None,
        "duration_s": 9.5,
        "status": "completed",
        "owner": "alice",
    }
    assert lineage["loss_curve"] == [
        {"step": 1, "loss": 2.0, "learning_rate": 1e-4, "epoch": 0.5},
        {"step": 2, "loss": 1.5, "learning_rate": None, "epoch": 1.0},
    ]
    assert lineage["config"]["num_train_epochs"] == 1 and lineage["parent_model_id"] is None
    # A model without one says so with null.
    assert (await client.get("/api/models/1")).json()["lineage"] is None


async def test_lineage_endpoint_gives_a_reproduce_body(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    model = add_trained_model(fakes)
    response = await client.get(f"/api/models/{model.id}/lineage")
    assert response.status_code == 200
    body = response.json()
    assert body["model_id"] == model.model_id
    # A run recorded without a world size trained in one process.
    assert body["environment"] == {
        "versions": {"torch": "2.13.0"}, "device": "cpu", "python": "3.12.3",
        "world_size": 1, "distributed": "", "processes_per_node": 1, "num_nodes": 1,
    }
    assert body["reproduce"] == {
        "task": "text-generation",
        "model_name": "/data/models/tiny-llama",
        "provider": "huggingface",
        "strategy": "sft",
        "dataset": "train.jsonl",
        "dataset_sha256": DATASET_SHA,
        "num_train_epochs": 1,
        "learning_rate": 0.0002,
        "seed": 42,
        "lr_scheduler_type": "cosine",
        "max_steps": -1,
    }

    missing = await client.get("/api/models/1/lineage")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "Model 1 has no lineage: it was not trained by ModelForge"
    assert (await client.get("/api/models/model_xyz/lineage")).json()["detail"] == "Model model_xyz not found"


async def test_a_dataset_digest_that_no_longer_matches_is_409(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    fakes.trainer.known_datasets.add("train.jsonl")
    fakes.registry.datasets["train.jsonl"] = registry_pb2.Dataset(filename="train.jsonl", sha256="ef" * 32)
    body = {"task": "text-generation", "model_name": "org/tiny", "dataset": "train.jsonl"}

    refused = await client.post("/api/start_training", json={**body, "dataset_sha256": DATASET_SHA})
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"Dataset train.jsonl does not match dataset_sha256: the run asks for {DATASET_SHA}, "
        f"the stored file has {'ef' * 32}"
    )
    assert fakes.trainer.started == []

    malformed = await client.post("/api/start_training", json={**body, "dataset_sha256": "XYZ"})
    assert malformed.status_code == 400
    assert malformed.json()["detail"][0]["loc"] == ["body", "dataset_sha256"]

    matching = await client.post("/api/start_training", json={**body, "dataset_sha256": "ef" * 32})
    assert matching.status_code == 200
    assert not hasattr(fakes.trainer.started[0], "dataset_sha256")

    # The jobs API pins the digest the same way, before anything is queued.
    queued = await client.post("/api/jobs", json={**body, "dataset_sha256": DATASET_SHA})
    assert queued.status_code == 409
    assert "does not match dataset_sha256" in queued.json()["detail"]


async def test_listing_query_is_validated(client: httpx.AsyncClient) -> None:
    for query in ("limit=0", "offset=-1", "limit=abc", "limit=1001"):
        response = await client.get(f"/api/models?{query}")
        assert response.status_code == 400, query


async def test_listing_passes_every_filter_and_the_page_to_the_registry(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client
    seen: list[registry_pb2.ListModelsRequest] = []

    class RecordingRegistry:
        async def ListModels(self, request: registry_pb2.ListModelsRequest, **options: object) -> object:  # noqa: N802
            seen.append(request)
            return registry_pb2.ListModelsResponse(models=[make_model(1)], total=7)

    app.dependency_overrides[get_registry] = RecordingRegistry
    try:
        query = "task=summarization&base_model=org/A&strategy=dpo&provider=unsloth&status=completed&limit=5&offset=2"
        response = await client.get(f"/api/models?{query}")
    finally:
        app.dependency_overrides.pop(get_registry)
    assert response.status_code == 200
    assert response.json()["total"] == 7 and [m["id"] for m in response.json()["models"]] == [1]
    assert seen == [
        registry_pb2.ListModelsRequest(
            task="summarization",
            base_model="org/A",
            strategy="dpo",
            provider="unsloth",
            status="completed",
            limit=5,
            offset=2,
        )
    ]
