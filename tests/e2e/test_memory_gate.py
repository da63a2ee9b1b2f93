"""Issue 16's memory gate through the real processes, on the recorded RTX 3070 (8 GiB; hardware-svc
serves the recording, the trainer runs on this machine's CPU): an oversize start is a 400 naming the
largest parts and the nearest settings that fit; applying the first proposal's settings fits and
starts; estimate_memory returns the same proposals and the largest batch (and, for a job of several
processes, one process's share); `modelforge estimate` prints them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stack_api import running_stack, upload_jsonl

from modelforge_devkit.sample_data import text_generation_rows
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e]

# Llama-3.2-1B's shape (config.json only: the estimate never reads weights).
LLAMA_1B = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True,
    "max_position_embeddings": 131072,
}
# A fp32 LoRA job on the CPU trainer (no checkpointing there): 16 x 256 tokens is ~20 GiB, far over 8 GiB.
OVERSIZE = {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "max_seq_length": 256,
            "lora_r": 16, "lora_dropout": 0.0}
FIELD_VALUE = re.compile(r"(\w+)=(\w+)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_env_for: Callable[[Path], dict[str, str]]) -> Iterator[Stack]:
    env = stack_env_for(tmp_path_factory.mktemp("memory-gate"))
    env["MODELFORGE_FAKE_HARDWARE"] = "rtx3070"
    with running_stack(env) as running:
        yield running


@pytest.fixture(scope="module")
def llama_1b_shaped(tmp_path_factory: pytest.TempPathFactory, tiny_causal_model: Path) -> Path:
    folder = tmp_path_factory.mktemp("llama-1b-shape")
    config = json.loads((tiny_causal_model / "config.json").read_text())
    config.update(LLAMA_1B)
    (folder / "config.json").write_text(json.dumps(config))
    for item in tiny_causal_model.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens")):
            (folder / item.name).write_bytes(item.read_bytes())
    return folder


@pytest.fixture(scope="module")
def dataset(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return upload_jsonl(client, text_generation_rows(12), tmp_path_factory.mktemp("gate-data") / "gen.jsonl")


def start_body(model: Path, dataset: str, **settings: Any) -> dict[str, Any]:
    return {"task": "text-generation", "model_name": str(model), "provider": "huggingface", "strategy": "sft",
            "dataset": dataset, "num_train_epochs": 1, "learning_rate": 1e-3, **settings}


def first_proposal(message: str) -> dict[str, str]:
    """The fields of proposal (1) in a refusal: `(1) name=value name=value: description`."""
    match = re.search(r"\(1\) ([^:]+):", message)
    assert match, message
    return dict(FIELD_VALUE.findall(match.group(1)))


def typed(settings: dict[str, str]) -> dict[str, Any]:
    return {k: (v == "true" if v in ("true", "false") else int(v) if v.isdigit() else v) for k, v in settings.items()}


def test_an_oversize_start_is_refused_with_its_largest_parts_and_settings_that_fit_which_then_start(
    client: httpx.Client, llama_1b_shaped: Path, dataset: str
) -> None:
    before = client.get("/api/training_status").json()
    refused = client.post("/api/start_training", json=start_body(llama_1b_shaped, dataset, **OVERSIZE))

    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]
    assert "Not enough memory" in message and "cuda:0 (NVIDIA GeForce RTX 3070)" in message
    assert "Largest parts: activations" in message, message
    assert "Settings that fit: (1) " in message and "force" in message
    assert client.get("/api/training_status").json() == before

    proposal = typed(first_proposal(message))
    # The nearest: a smaller per-device batch whose accumulation keeps the effective batch of 16.
    assert set(proposal) == {"per_device_train_batch_size", "gradient_accumulation_steps"}
    assert proposal["per_device_train_batch_size"] < 16
    assert proposal["per_device_train_batch_size"] * proposal["gradient_accumulation_steps"] == 16

    started = client.post("/api/start_training", json=start_body(llama_1b_shaped, dataset, **{**OVERSIZE, **proposal}))
    assert started.status_code == 200, started.text
    job_id = started.json()["job_id"]
    client.post(f"/api/jobs/{job_id}/cancel")  # a shape without weights: nothing to train, only the gate


def test_estimate_memory_returns_the_same_proposals_and_the_largest_batch(
    client: httpx.Client, llama_1b_shaped: Path
) -> None:
    request = {"model_name": str(llama_1b_shaped), "strategy": "sft", "precision": "fp32",
               "gradient_checkpointing": False, **OVERSIZE}
    answer = client.post("/api/finetune/estimate_memory", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()

    assert body["fits"] is False and body["device"] == "cuda:0"
    assert body["largest_parts"][0]["name"] == "activations"
    assert 1 <= body["max_batch_size"] < 16
    first = body["proposals"][0]
    assert body["max_batch_size"] // 2 <= first["settings"]["per_device_train_batch_size"] <= body["max_batch_size"]
    assert first["total_bytes"] <= body["available_bytes"] + (1 << 29)

    applied = client.post("/api/finetune/estimate_memory", json={**request, **{
        name: first["settings"][name] for name in first["changed"]}})
    assert applied.status_code == 200 and applied.json()["fits"] is True, applied.text
    assert applied.json()["proposals"] == []

    unsloth = client.post("/api/finetune/estimate_memory", json={**request, "provider": "unsloth"}).json()
    assert unsloth["provider"] == "unsloth" and unsloth["total_bytes"] < body["total_bytes"]


def test_modelforge_estimate_prints_the_settings_that_fit(stack: Stack, llama_1b_shaped: Path) -> None:
    cli = Path(sys.executable).with_name("modelforge")
    done = subprocess.run(
        [str(cli), "--url", stack.gateway_url, "estimate", "--model", str(llama_1b_shaped), "--strategy", "sft",
         "--batch-size", "16", "--max-seq-length", "256", "--precision", "fp32", "--no-gradient-checkpointing",
         "--lora-r", "16", "--lora-dropout", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "does not fit" in out and "Largest parts: activations" in out
    assert re.search(r"Largest per-device batch that fits: \d+", out), out
    proposal = r"Settings that fit:\n  \(1\) per_device_train_batch_size=\d+ gradient_accumulation_steps=\d+"
    assert re.search(proposal, out), out


# A job of several processes (issue 19's estimate through REST): bf16 weights outweigh a short
# sequence's activations and the LoRA adapters' state, so sharding them shows per GPU.
DISTRIBUTED_ESTIMATE = {"strategy": "sft", "task": "text-generation", "precision": "bf16", "use_4bit": False,
                        "per_device_train_batch_size": 1, "max_seq_length": 256, "provider": "huggingface"}


def estimate_per_process(client: httpx.Client, model: Path, **fields: Any) -> dict[str, Any]:
    body = {"model_name": str(model), **DISTRIBUTED_ESTIMATE, **fields}
    response = client.post("/api/finetune/estimate_memory", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_fsdp_over_8_processes_holds_less_per_gpu_than_one_process(client: httpx.Client, llama_1b_shaped: Path) -> None:
    alone = estimate_per_process(client, llama_1b_shaped)
    sharded = estimate_per_process(client, llama_1b_shaped, processes_per_node=4, num_nodes=2, distributed="fsdp")

    breakdown = alone["breakdown"]
    others = ("adapters", "optimizer", "gradients", "activations", "logits")
    assert all(breakdown["weights_bytes"] > breakdown[f"{part}_bytes"] for part in others), breakdown
    assert (alone["world_size"], alone["settings"]["distributed"]) == (1, "ddp")
    assert (sharded["world_size"], sharded["settings"]["distributed"]) == (8, "fsdp")
    # Each of the 8 holds an eighth of the weights plus the full parameters of the layers it gathers
    # (two of 16): well under half; the whole estimate per GPU is smaller too.
    assert sharded["breakdown"]["weights_bytes"] < alone["breakdown"]["weights_bytes"] / 2, sharded["breakdown"]
    assert sharded["total_bytes"] < alone["total_bytes"], (sharded["total_bytes"], alone["total_bytes"])


def test_an_out_of_range_process_count_is_refused_naming_the_field(client: httpx.Client, llama_1b_shaped: Path) -> None:
    response = client.post("/api/finetune/estimate_memory",
                           json={"model_name": str(llama_1b_shaped), **DISTRIBUTED_ESTIMATE, "processes_per_node": 65})
    assert response.status_code == 400, response.text
    assert [item["loc"] for item in response.json()["detail"]] == [["body", "processes_per_node"]]
