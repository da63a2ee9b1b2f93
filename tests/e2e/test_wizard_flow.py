"""Issue 3's guided flow (spec/responses.md "Training Endpoints") through the gateway and the real
hardware-svc and registry-svc processes: every wizard endpoint with its documented fields, the
profile for each recorded machine (hardware-svc restarted on each), and the whole flow on this
GPU-less machine ending in a real tiny fine-tune."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stack_api import upload_jsonl

from modelforge_devkit.sample_data import text_generation_rows
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DETECT_FIELDS = {
    "status_code", "profile", "task", "gpu_name", "gpu_total_memory_gb", "ram_total_gb",
    "available_diskspace_gb", "cpu_cores", "model_recommendation", "possible_options",
}
SPECS_FIELDS = {"gpu_name", "gpu_memory_gb", "ram_gb", "disk_space_gb", "cpu_cores", "cuda_version", "torch_version"}
SETTINGS_FIELDS = {
    "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "num_train_epochs",
    "max_seq_length", "lora_r", "lora_alpha", "use_4bit", "bf16", "warmup_ratio", "lr_scheduler_type", "optim",
}
TASKS = ("text-generation", "summarization", "extractive-question-answering")

# recording -> (profile, gpu name, total GPU memory in GB, RAM in GB, CPU cores)
MACHINES = {
    "rtx3070": ("mid_range", "NVIDIA GeForce RTX 3070", 8.0, 16.0, 8),
    "rtx4090": ("high_end", "NVIDIA GeForce RTX 4090", 24.0, 64.0, 24),
    "h100x2": ("high_end", "NVIDIA H100 80GB HBM3", 79.6, 2015.0, 96),
    "none": ("low_end", None, 0.0, 24.0, 4),
}


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=60, headers={"X-Session-Id": "wizard-e2e"}) as http:
        yield http


def serve_recording(stack: Stack, recording: str) -> None:
    stack.env["MODELFORGE_FAKE_HARDWARE"] = recording
    stack.stop_one("hardware")
    stack.start_service("hardware")


@pytest.mark.parametrize("recording", list(MACHINES))
def test_profile_and_documented_shapes_for_each_recorded_machine(
    stack: Stack, client: httpx.Client, recording: str
) -> None:
    profile, gpu_name, gpu_gb, ram_gb, cores = MACHINES[recording]
    serve_recording(stack, recording)
    try:
        detect = client.post("/api/finetune/detect", json={"task": "text-generation"})
        assert detect.status_code == 200, detect.text
        body = detect.json()
        assert set(body) == DETECT_FIELDS
        assert (body["profile"], body["task"], body["status_code"]) == (profile, "text-generation", 200)
        assert body["gpu_name"] == gpu_name if gpu_name else body["gpu_name"] in (None, "", "cpu", "CPU")
        assert body["gpu_total_memory_gb"] == pytest.approx(gpu_gb, abs=0.1)
        assert body["ram_total_gb"] == pytest.approx(ram_gb, rel=0.08)
        assert body["cpu_cores"] == cores
        assert body["model_recommendation"] in body["possible_options"]

        specs = client.get("/api/finetune/hardware_specs")
        assert specs.status_code == 200 and set(specs.json()) >= SPECS_FIELDS, specs.text
        assert specs.json()["cpu_cores"] == cores

        for task in TASKS:
            recommended = client.get(f"/api/finetune/recommended_models/{task}")
            assert recommended.status_code == 200, recommended.text
            shape = recommended.json()
            assert set(shape) == {"task", "recommended_model", "possible_models", "compute_profile"}
            assert (shape["task"], shape["compute_profile"]) == (task, profile)
            assert shape["recommended_model"] in shape["possible_models"]

        settings = client.get("/api/finetune/load_settings")
        assert settings.status_code == 200 and set(settings.json()) == SETTINGS_FIELDS, settings.text
        defaults = settings.json()
        if gpu_name:  # every recorded GPU here fits 4-bit QLoRA defaults
            assert defaults["use_4bit"] is True
        else:  # CPU training: fp32, no CUDA-only paged optimizer
            assert (defaults["bf16"], defaults["optim"]) == (False, "adamw_torch")
    finally:
        serve_recording(stack, "none")


def test_the_spec_example_machine_recommends_the_spec_models(stack: Stack, client: httpx.Client) -> None:
    serve_recording(stack, "rtx3070")
    try:
        body = client.post("/api/finetune/detect", json={"task": "text-generation"}).json()
    finally:
        serve_recording(stack, "none")
    assert body["model_recommendation"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert body["possible_options"] == [
        "meta-llama/Llama-3.1-8B-Instruct", "qwen/Qwen2.5-7B", "mistralai/Mistral-Small-3.1-24B-Base-2503",
    ]


def wait_for(client: httpx.Client, wanted: set[str], limit_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get("/api/finetune/status").json()
        if status["status"] in wanted:
            return status
        time.sleep(0.3)
    raise AssertionError(f"status never reached {wanted}: {status}")


def test_the_whole_flow_on_this_machine_ends_in_a_trained_model(
    client: httpx.Client, tiny_causal_model: Path, tmp_path: Path
) -> None:
    assert client.post("/api/finetune/validate_task", json={"task": "text-generation"}).json() == {
        "valid": True, "task": "text-generation"}
    bad_task = client.post("/api/finetune/validate_task", json={"task": "poetry"})
    assert bad_task.status_code == 400
    assert all({"loc", "msg", "type"} <= set(item) for item in bad_task.json()["detail"])

    detect = client.post("/api/finetune/detect", json={"task": "text-generation"}).json()
    assert (detect["profile"], detect["gpu_total_memory_gb"]) == ("low_end", 0.0)

    model = str(tiny_causal_model)
    assert client.post("/api/finetune/validate_model", json={"selected_model": model}).json() == {
        "valid": True, "model": model}
    custom = client.post("/api/finetune/validate_custom_model", json={"repo_name": model})
    assert custom.status_code == 200 and custom.json()["valid"] is True, custom.text
    missing = client.post("/api/finetune/validate_custom_model", json={"repo_name": "nobody/does-not-exist"})
    assert missing.status_code in (403, 503), missing.text
    assert "nobody/does-not-exist" in missing.json()["detail"]

    chosen = client.post("/api/finetune/set_custom_model", json={"repo_name": model})
    assert chosen.status_code == 200, chosen.text
    assert {"success", "selected_model", "message", "valid", "repo_name"} <= set(chosen.json())
    session = client.get("/api/finetune/session").json()
    assert session == {"success": True, "task": "text-generation", "selected_model": model, "is_custom_model": True}

    settings = client.get("/api/finetune/load_settings").json()
    dataset = upload_jsonl(client, text_generation_rows(16), tmp_path / "wizard.jsonl")

    assert client.get("/api/finetune/status").json()["status"] in ("idle", "completed", "error")
    # Task and model come from the session; the tiny CPU run overrides the low_end defaults.
    start = client.post("/api/finetune/start_training", json=settings | {
        "dataset": dataset, "provider": "huggingface", "strategy": "sft", "use_4bit": False,
        "bf16": False, "max_steps": 3, "max_seq_length": 64, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "optim": "adamw_torch",
    })
    assert start.status_code == 200, start.text
    assert set(start.json()) == {"success", "message", "job_id"}
    done = wait_for(client, {"completed", "error"})
    assert (done["status"], done["progress"], done["error"]) == ("completed", 100, None), done
    assert done["message"]

    reset = client.post("/api/finetune/reset_status")
    assert reset.json() == {"success": True, "message": "Training status reset successfully"}
    idle = client.get("/api/finetune/status").json()
    documented = {k: idle.get(k) for k in ("status", "progress", "message", "error")}
    assert documented == {"status": "idle", "progress": 0, "message": "No training in progress", "error": None}
