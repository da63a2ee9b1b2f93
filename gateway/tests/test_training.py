"""Training endpoints: rest-api.md start/status/stop and the v1 start, with the trainer fake."""

from __future__ import annotations

import httpx
import pytest
from gateway_fakes import FakeServices

from modelforge.v1 import common_pb2

TASK_MESSAGE = "Invalid task: xyz. Must be one of ['text-generation', 'summarization', 'extractive-question-answering']"
START = {
    "task": "text-generation",
    "model_name": "meta-llama/Llama-3.2-3B",
    "provider": "huggingface",
    "strategy": "sft",
    "dataset": "train.jsonl",
    "max_seq_length": 2048,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 4,
}


async def test_start_training_answers_the_rest_api_shape(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    response = await client.post("/api/start_training", json={**START, "learning_rate": 2e-4})
    assert response.status_code == 200
    assert response.json() == {
        "status": "started",
        "job_id": "train_000001",
        "message": "Training started successfully",
    }
    config = fakes.trainer.started[0]
    assert (config.task, config.model_name, config.dataset) == ("text-generation", START["model_name"], "train.jsonl")
    assert config.num_train_epochs == 3 and config.per_device_train_batch_size == 4
    assert config.learning_rate == pytest.approx(2e-4)
    assert not config.HasField("lora_r")  # unset stays unset: the trainer's default applies
    # A write deadline (30 s), not a read one (5 s); the margin absorbs clock granularity.
    remaining = fakes.trainer.timeouts[-1]
    assert remaining is not None and 5 < remaining <= 31


async def test_start_defaults_provider_and_strategy(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    body = {"task": "summarization", "model_name": "t5-small", "dataset": "train.jsonl"}
    assert (await client.post("/api/start_training", json=body)).status_code == 200
    assert (fakes.trainer.started[0].provider, fakes.trainer.started[0].strategy) == ("huggingface", "sft")


async def test_second_start_is_409(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/start_training", json=START)).status_code == 200
    second = await client.post("/api/start_training", json=START)
    assert second.status_code == 409
    assert second.json()["detail"] == "Training job train_000001 is already running"
    assert second.json()["status_code"] == 409
    v1_second = await client.post("/api/finetune/start_training", json=START)
    assert v1_second.status_code == 409


async def test_unknown_task_is_400_with_the_spec_message(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/start_training", json={**START, "task": "xyz"})
    assert response.status_code == 400
    assert response.json()["detail"] == [{"loc": ["body", "task"], "msg": TASK_MESSAGE, "type": "value_error"}]


async def test_missing_fields_and_wrong_types_are_400_in_list_form(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/start_training", json={"task": "text-generation", "num_train_epochs": "abc"})
    assert response.status_code == 400
    locs = {tuple(item["loc"]) for item in response.json()["detail"]}
    assert locs == {("body", "model_name"), ("body", "dataset"), ("body", "num_train_epochs")}
    assert all(set(item) == {"loc", "msg", "type"} for item in response.json()["detail"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", 0),
        ("per_device_train_batch_size", 0),
        ("provider", "tensorflow"),
        ("strategy", "ppo"),
        ("max_steps", 2**40),  # beyond the protobuf int32
        ("compute_specs", "supercomputer"),
    ],
)
async def test_out_of_range_values_are_400(client: httpx.AsyncClient, field: str, value: object) -> None:
    response = await client.post("/api/start_training", json={**START, field: value})
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["body", field]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b'{"task": ', "application/json"), (b"[1, 2]", "application/json"), (b'{"task": "x"}', None)],
    ids=["malformed", "not-an-object", "no-content-type"],
)
async def test_unusable_bodies_are_400(client: httpx.AsyncClient, content: bytes, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/api/start_training", content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["status_code"] == 400
    assert isinstance(response.json()["detail"], list)


async def test_malformed_json_names_the_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/start_training", content=b"{oops", headers={"content-type": "application/json"})
    assert response.json()["detail"][0]["type"] == "json_invalid"
    assert response.json()["detail"][0]["msg"].startswith("Request body is not valid JSON")


async def test_trainer_field_violations_are_rendered_in_list_form(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/start_training", json={**START, "dataset": "nope.jsonl"})
    assert response.status_code == 400
    assert response.json()["detail"] == [
        {"loc": ["body", "dataset"], "msg": "no uploaded dataset named nope.jsonl", "type": "value_error"}
    ]
    assert response.json()["error"] == "Dataset validation failed: File not found"


async def test_training_status_idle(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/training_status")).json()
    assert body["status"] == "idle"
    for field in ("progress", "current_epoch", "total_epochs", "current_step", "total_steps", "loss", "learning_rate"):
        assert field in body


async def test_training_status_running_reads_training(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    fakes.trainer.job = common_pb2.TrainingJob(
        job_id="train_7",
        status=common_pb2.JOB_STATUS_RUNNING,
        progress=45.5,
        current_epoch=2,
        total_epochs=3,
        current_step=500,
        total_steps=1100,
        loss=0.234,
        learning_rate=0.0002,
        message="Training epoch 2/3 - Step 500/1100",
    )
    body = (await client.get("/api/training_status")).json()
    assert {k: body[k] for k in ("status", "progress", "current_epoch", "total_epochs")} == {
        "status": "training",
        "progress": 45.5,
        "current_epoch": 2,
        "total_epochs": 3,
    }
    assert (body["current_step"], body["total_steps"], body["loss"], body["learning_rate"]) == (
        500,
        1100,
        0.234,
        0.0002,
    )
    assert body["job_id"] == "train_7"


@pytest.mark.parametrize(
    ("status", "word"),
    [
        (common_pb2.JOB_STATUS_QUEUED, "queued"),
        (common_pb2.JOB_STATUS_COMPLETED, "completed"),
        (common_pb2.JOB_STATUS_ERROR, "error"),
        (common_pb2.JOB_STATUS_STOPPED, "stopped"),
    ],
)
async def test_training_status_words(client: httpx.AsyncClient, fakes: FakeServices, status: int, word: str) -> None:
    fakes.trainer.job = common_pb2.TrainingJob(job_id="j", status=status)  # type: ignore[arg-type]
    assert (await client.get("/api/training_status")).json()["status"] == word


async def test_training_status_of_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/training_status", params={"job_id": "nope"})
    assert response.status_code == 404
    assert response.json()["detail"] == "Training job nope not found"


async def test_stop_training(client: httpx.AsyncClient) -> None:
    nothing = await client.post("/api/stop_training")
    assert nothing.status_code == 409
    assert nothing.json()["detail"] == "No training in progress"
    await client.post("/api/start_training", json=START)
    stopped = await client.post("/api/stop_training")
    assert stopped.status_code == 200
    assert stopped.json() == {"status": "stopped", "message": "Training stopped successfully"}
    assert (await client.get("/api/training_status")).json()["status"] == "stopped"
    assert (await client.post("/api/stop_training")).status_code == 409


async def test_stop_training_never_claims_a_stop_that_has_not_happened(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    await client.post("/api/start_training", json=START)
    fakes.trainer.stop_outlasts_the_wait = True
    answer = await client.post("/api/stop_training")
    assert answer.status_code == 200
    assert answer.json()["status"] == "stopping" and "still saving" in answer.json()["message"]
    assert (await client.get("/api/training_status")).json()["status"] != "stopped"


async def test_v1_start_training_shape(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    body = {**START, "strategy": "qlora", "compute_specs": "mid_range", "learning_rate": 2e-4}
    response = await client.post("/api/finetune/start_training", json=body)
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Training started successfully", "job_id": "train_000001"}
    assert fakes.trainer.started[0].compute_specs == "mid_range"


async def test_v1_start_fills_task_and_model_from_the_session(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    await client.post("/api/finetune/detect", json={"task": "summarization"})
    await client.post("/api/finetune/set_model", json={"selected_model": "google/flan-t5-small"})
    response = await client.post("/api/finetune/start_training", json={"dataset": "train.jsonl"})
    assert response.status_code == 200
    assert (fakes.trainer.started[0].task, fakes.trainer.started[0].model_name) == (
        "summarization",
        "google/flan-t5-small",
    )


async def test_v1_start_without_task_or_model_anywhere_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/finetune/start_training", json={"dataset": "train.jsonl"})
    assert response.status_code == 400
    assert [item["loc"] for item in response.json()["detail"]] == [["body", "task"], ["body", "model_name"]]
