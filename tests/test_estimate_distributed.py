"""POST /api/finetune/estimate_memory for a job of several processes, through the real gateway and
hardware-svc on the recorded RTX 3070: FSDP over 8 processes (4 per node x 2 nodes) shards the
weights, so each GPU holds less than one process training alone, for a model whose weights dominate."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stack_api import running_stack

from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e]

# Llama-3.2-1B's shape (config.json only: the estimate never reads weights); in bf16 its ~2.3 GiB of
# frozen weights outweigh a short sequence's activations and the LoRA adapters' state.
LLAMA_1B = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True,
    "max_position_embeddings": 131072,
}
ESTIMATE = {"strategy": "sft", "task": "text-generation", "precision": "bf16", "use_4bit": False,
            "per_device_train_batch_size": 1, "max_seq_length": 256, "provider": "huggingface"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_env_for: Callable[[Path], dict[str, str]]) -> Iterator[Stack]:
    env = stack_env_for(tmp_path_factory.mktemp("estimate-distributed"))
    env["MODELFORGE_FAKE_HARDWARE"] = "rtx3070"  # one recorded GPU: the same answer on any host
    with running_stack(env) as running:
        yield running


@pytest.fixture(scope="module")
def llama_1b_shaped(tmp_path_factory: pytest.TempPathFactory, tiny_causal_model: Path) -> Path:
    folder = tmp_path_factory.mktemp("llama-1b-shape")
    config = json.loads((tiny_causal_model / "config.json").read_text())
    config.update(LLAMA_1B)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def estimate(client: httpx.Client, model: Path, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/finetune/estimate_memory", json={"model_name": str(model), **ESTIMATE, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_fsdp_over_8_processes_holds_less_per_gpu_than_one_process(client: httpx.Client, llama_1b_shaped: Path) -> None:
    alone = estimate(client, llama_1b_shaped)
    sharded = estimate(client, llama_1b_shaped, processes_per_node=4, num_nodes=2, distributed="fsdp")

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
                           json={"model_name": str(llama_1b_shaped), **ESTIMATE, "processes_per_node": 65})
    assert response.status_code == 400, response.text
    assert [item["loc"] for item in response.json()["detail"]] == [["body", "processes_per_node"]]
