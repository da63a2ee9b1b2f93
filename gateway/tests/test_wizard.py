"""The v1 wizard (responses.md "Training Endpoints"): exact shapes, sessions, hardware, estimates."""

from __future__ import annotations

import httpx
import pytest
from gateway_fakes import FakeServices

from modelforge.v1 import common_pb2

TASK_MESSAGE = "Invalid task: xyz. Must be one of ['text-generation', 'summarization', 'extractive-question-answering']"
GIB = 1024**3


async def test_validate_task(client: httpx.AsyncClient) -> None:
    ok = await client.post("/api/finetune/validate_task", json={"task": "text-generation"})
    assert ok.json() == {"valid": True, "task": "text-generation"}
    bad = await client.post("/api/finetune/validate_task", json={"task": "xyz"})
    assert bad.status_code == 400
    assert bad.json()["detail"] == [{"loc": ["body", "task"], "msg": TASK_MESSAGE, "type": "value_error"}]


async def test_validate_model(client: httpx.AsyncClient) -> None:
    ok = await client.post("/api/finetune/validate_model", json={"selected_model": "meta-llama/Llama-3.1-8B-Instruct"})
    assert ok.json() == {"valid": True, "model": "meta-llama/Llama-3.1-8B-Instruct"}
    blank = await client.post("/api/finetune/validate_model", json={"selected_model": "  "})
    assert blank.status_code == 400
    assert blank.json()["detail"][0]["loc"] == ["body", "selected_model"]


async def test_validate_custom_model(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    ok = await client.post("/api/finetune/validate_custom_model", json={"repo_name": "username/custom-model"})
    assert ok.status_code == 200
    body = ok.json()
    assert (body["valid"], body["repo_name"]) == (True, "username/custom-model")
    assert {k: body["model_info"][k] for k in ("id", "author", "downloads", "likes")} == {
        "id": "username/custom-model",
        "author": "username",
        "downloads": 1234,
        "likes": 56,
    }
    # The Hub may be slow: DescribeModel gets the hub deadline, not the 5 s read one.
    remaining = fakes.hardware.describe_timeouts[-1]
    assert remaining is not None and remaining > 6


@pytest.mark.parametrize("repo", ["gated/model", "missing/model"])
async def test_inaccessible_custom_model_is_403_with_the_spec_message(client: httpx.AsyncClient, repo: str) -> None:
    response = await client.post("/api/finetune/validate_custom_model", json={"repo_name": repo})
    assert response.status_code == 403
    assert response.json()["detail"] == (
        f"Model {repo} is not accessible. Please check if it exists and you have permissions."
    )


async def test_unreachable_hub_is_503(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/finetune/validate_custom_model", json={"repo_name": "offline/model"})
    assert response.status_code == 503
    assert response.json()["detail"] == "Hugging Face Hub cannot be reached"


async def test_detect_without_gpu(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/finetune/detect", json={"task": "text-generation"})
    assert response.status_code == 200
    assert response.json() == {
        "status_code": 200,
        "profile": "low_end",
        "task": "text-generation",
        "gpu_name": "",
        "gpu_total_memory_gb": 0.0,
        "ram_total_gb": 16.0,
        "available_diskspace_gb": 250.5,
        "cpu_cores": 8,
        "model_recommendation": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "possible_options": ["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"],
    }
    session = (await client.get("/api/finetune/session")).json()
    assert session["task"] == "text-generation"


async def test_detect_with_gpu_and_invalid_task(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    fakes.hardware.with_gpu = True
    body = (await client.post("/api/finetune/detect", json={"task": "summarization"})).json()
    assert (body["gpu_name"], body["gpu_total_memory_gb"], body["profile"]) == ("NVIDIA H100", 80.0, "high_end")
    bad = await client.post("/api/finetune/detect", json={"task": "xyz"})
    assert bad.status_code == 400
    assert bad.json()["detail"][0]["msg"] == TASK_MESSAGE


async def test_session_starts_empty_and_follows_set_model(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/finetune/session")).json() == {
        "success": True,
        "task": None,
        "selected_model": None,
        "is_custom_model": False,
    }
    response = await client.post("/api/finetune/set_model", json={"selected_model": "qwen/Qwen2.5-7B"})
    assert response.json() == {
        "success": True,
        "selected_model": "qwen/Qwen2.5-7B",
        "message": "Model selection saved successfully",
    }
    session = (await client.get("/api/finetune/session")).json()
    assert (session["selected_model"], session["is_custom_model"]) == ("qwen/Qwen2.5-7B", False)


async def test_sessions_are_per_client(client: httpx.AsyncClient) -> None:
    await client.post("/api/finetune/set_model", json={"selected_model": "a/one"}, headers={"X-Session-Id": "alice"})
    await client.post(
        "/api/finetune/set_model", json={"selected_model": "b/two"}, cookies={"modelforge_session": "bob"}
    )
    alice = (await client.get("/api/finetune/session", headers={"X-Session-Id": "alice"})).json()
    bob = (await client.get("/api/finetune/session", cookies={"modelforge_session": "bob"})).json()
    default = (await client.get("/api/finetune/session")).json()
    assert (alice["selected_model"], bob["selected_model"], default["selected_model"]) == ("a/one", "b/two", None)
    bad = await client.get("/api/finetune/session", headers={"X-Session-Id": "no spaces allowed"})
    assert bad.status_code == 400
    assert bad.json()["detail"][0]["loc"] == ["header", "x-session-id"]


async def test_set_custom_model(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/finetune/set_custom_model", json={"repo_name": "username/custom-model"})
    assert response.json() == {
        "success": True,
        "selected_model": "username/custom-model",
        "message": "Custom model validated and saved successfully",
        "valid": True,
        "repo_name": "username/custom-model",
    }
    assert (await client.get("/api/finetune/session")).json()["is_custom_model"] is True
    denied = await client.post("/api/finetune/set_custom_model", json={"repo_name": "gated/x"})
    assert denied.status_code == 403
    assert (await client.get("/api/finetune/session")).json()["selected_model"] == "username/custom-model"


async def test_load_settings_uses_the_session_task(client: httpx.AsyncClient) -> None:
    first = (await client.get("/api/finetune/load_settings")).json()
    assert first == {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "learning_rate": 2e-4,
        "num_train_epochs": 3,
        "max_seq_length": 1024,
        "lora_r": 16,
        "lora_alpha": 32,
        "use_4bit": False,
        "bf16": False,
        "warmup_ratio": 0.03,
        "lr_scheduler_type": "cosine",
        "optim": "adamw_torch",
    }
    await client.post("/api/finetune/detect", json={"task": "summarization"})
    assert (await client.get("/api/finetune/load_settings")).json()["max_seq_length"] == 512


def _job(status: int, **fields: object) -> common_pb2.TrainingJob:
    return common_pb2.TrainingJob(job_id="train_1", status=status, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (None, {"status": "idle", "progress": 0, "message": "No training in progress", "error": None}),
        (
            _job(
                common_pb2.JOB_STATUS_RUNNING,
                progress=45.2,
                current_epoch=2,
                total_epochs=3,
                current_step=450,
                total_steps=1000,
            ),
            {"status": "running", "progress": 45, "message": "Training epoch 2/3 - Step 450/1000", "error": None},
        ),
        (
            _job(common_pb2.JOB_STATUS_QUEUED, message="Waiting for the worker"),
            {"status": "running", "progress": 0, "message": "Waiting for the worker", "error": None},
        ),
        (
            _job(common_pb2.JOB_STATUS_COMPLETED, progress=100, model_id="model_1"),
            {"status": "completed", "progress": 100, "message": "Training completed successfully", "error": None},
        ),
        (
            _job(common_pb2.JOB_STATUS_ERROR, progress=30, error="CUDA out of memory"),
            {"status": "error", "progress": 30, "message": "Training failed", "error": "CUDA out of memory"},
        ),
        (
            _job(common_pb2.JOB_STATUS_STOPPED, progress=12),
            {"status": "error", "progress": 12, "message": "Training was stopped", "error": "Training was stopped"},
        ),
    ],
    ids=["idle", "running", "queued", "completed", "error", "stopped"],
)
async def test_v1_status(
    client: httpx.AsyncClient, fakes: FakeServices, job: common_pb2.TrainingJob | None, expected: dict[str, object]
) -> None:
    fakes.trainer.job = job
    body = (await client.get("/api/finetune/status")).json()
    assert {k: body[k] for k in ("status", "progress", "message", "error")} == expected


async def test_reset_status(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    fakes.trainer.job = _job(common_pb2.JOB_STATUS_RUNNING)
    assert (await client.post("/api/finetune/reset_status")).status_code == 409
    fakes.trainer.job = _job(common_pb2.JOB_STATUS_COMPLETED)
    response = await client.post("/api/finetune/reset_status")
    assert response.json() == {"success": True, "message": "Training status reset successfully"}
    assert (await client.get("/api/finetune/status")).json()["status"] == "idle"


async def test_hardware_specs(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    cpu = (await client.get("/api/finetune/hardware_specs")).json()
    assert {k: cpu[k] for k in ("gpu_name", "gpu_memory_gb", "ram_gb", "disk_space_gb", "cpu_cores")} == {
        "gpu_name": "",
        "gpu_memory_gb": 0.0,
        "ram_gb": 16.0,
        "disk_space_gb": 250.5,
        "cpu_cores": 8,
    }
    assert (cpu["cuda_version"], cpu["torch_version"]) == (None, "2.13.0")
    fakes.hardware.with_gpu = True
    gpu = (await client.get("/api/finetune/hardware_specs")).json()
    assert (gpu["gpu_name"], gpu["gpu_memory_gb"], gpu["cuda_version"]) == ("NVIDIA H100", 80.0, "12.6")


async def test_recommended_models(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/finetune/recommended_models/text-generation")
    assert response.json() == {
        "task": "text-generation",
        "recommended_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "possible_models": ["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"],
        "compute_profile": "low_end",
    }
    bad = await client.get("/api/finetune/recommended_models/xyz")
    assert bad.status_code == 400
    assert bad.json()["detail"] == [{"loc": ["path", "task"], "msg": TASK_MESSAGE, "type": "value_error"}]


async def test_estimate_memory(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    body = {
        "model_name": "meta-llama/Llama-3.2-1B",
        "strategy": "qlora",
        "lora_r": 16,
        "batch_size": 2,
        "max_seq_length": 1024,
        "bf16": False,
    }
    response = await client.post("/api/finetune/estimate_memory", json=body)
    assert response.status_code == 200
    result = response.json()
    sent = fakes.hardware.estimates[-1]
    assert (sent.precision, sent.use_4bit, sent.batch_size, sent.gpu_index, sent.gradient_checkpointing) == (
        "fp32",
        True,
        2,
        -1,
        True,
    )
    breakdown = result["breakdown"]
    assert breakdown["weights_bytes"] == GIB // 2 and breakdown["weights_gb"] == 0.5
    assert result["total_bytes"] == breakdown["total_bytes"] > 0
    assert (result["fits"], result["device"], result["available_gb"]) == (True, "cpu", 12.0)
    assert result["message"] == "fits in available RAM"


async def test_estimate_memory_accepts_per_device_batch_size_and_validates(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    body = {"model_name": "m/m", "strategy": "sft", "per_device_train_batch_size": 8, "precision": "bf16"}
    assert (await client.post("/api/finetune/estimate_memory", json=body)).status_code == 200
    assert (fakes.hardware.estimates[-1].batch_size, fakes.hardware.estimates[-1].use_4bit) == (8, False)
    bad = await client.post("/api/finetune/estimate_memory", json={"model_name": "m/m", "lora_r": 0})
    assert bad.status_code == 400
    missing = await client.post("/api/finetune/estimate_memory", json={"model_name": "missing/model"})
    assert missing.status_code == 404
