"""Issue 4's refusals through the real processes: ten kinds of bad dataset rows, rows that do not
suit the chosen task or strategy, invalid (task, strategy) pairs, unsloth without a GPU and
out-of-range training settings. Each is a 400 with the reason, and nothing is stored or queued."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelforge_devkit.sample_data import (
    preference_rows,
    summarization_rows,
    text_generation_rows,
    write_jsonl,
)

pytestmark = [pytest.mark.e2e]

GOOD = {"prompt": "What is a fox?", "completion": "A small wild dog."}
QA = {"context": "Foxes live in dens.", "question": "Where do foxes live?",
      "answers": {"text": ["in dens"], "answer_start": [11]}}


def jsonl(*rows: Any, padding: int = 11) -> bytes:
    """Good rows first (enough to pass the minimum), then the rows under test: their line numbers
    start at padding + 1."""
    lines = [json.dumps(GOOD)] * padding + [r if isinstance(r, str) else json.dumps(r) for r in rows]
    return ("\n".join(lines) + "\n").encode()


BAD_ROWS = [
    # (id, file content, the line the error must name, a fragment of the reason)
    ("not-json", jsonl('{"prompt": "a", "completion": '), "line 12", "not valid JSON"),
    ("not-an-object", jsonl("[1, 2, 3]"), "line 12", "must be a JSON object"),
    ("no-known-fields", jsonl({"question_text": "a", "reply": "b"}), "line 12", "prompt"),
    ("number-instead-of-text", jsonl({"prompt": 42, "completion": "b"}), "line 12", "prompt"),
    ("empty-completion", jsonl({"prompt": "a", "completion": "   "}), "line 12", "completion"),
    ("chat-unknown-role", jsonl({"messages": [{"role": "robot", "content": "hi"}]}), "line 12", "role"),
    ("chat-no-assistant", jsonl({"messages": [{"role": "user", "content": "hi"}]}), "line 12", "assistant"),
    ("qa-answer-not-at-offset", jsonl(QA | {"answers": {"text": ["in dens"], "answer_start": [3]}}),
     "line 12", "answer_start"),
    ("qa-answers-not-a-dict", jsonl(QA | {"answers": ["in dens"]}), "line 12", "answers"),
    ("preference-missing-rejected", jsonl({"prompt": "a", "chosen": "b", "rejected": ""}), "line 12", "rejected"),
    ("too-few-rows", jsonl(padding=3), "", "at least 10"),
    ("empty-file", b"", "", "empty"),
]


@pytest.mark.parametrize(("content", "where", "fragment"), [row[1:] for row in BAD_ROWS], ids=[r[0] for r in BAD_ROWS])
def test_ten_kinds_of_bad_rows_are_refused_at_upload_naming_line_and_field(
    client: httpx.Client, content: bytes, where: str, fragment: str
) -> None:
    before = client.get("/api/datasets").json()["datasets"]
    response = client.post("/api/upload_dataset", files={"file": ("bad.jsonl", content, "application/jsonl")})
    assert response.status_code == 400, response.text
    text = json.dumps(response.json())
    assert where in text and fragment in text, text
    assert client.get("/api/datasets").json()["datasets"] == before


def upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as handle:
        response = client.post("/api/upload_dataset", files={"file": (path.name, handle, "application/jsonl")})
    assert response.status_code == 200, response.text
    name: str = response.json()["filename"]
    return name


@pytest.fixture(scope="module")
def datasets(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("rules-data")
    return {
        "generation": upload(client, write_jsonl(text_generation_rows(12), folder / "gen.jsonl")),
        "summaries": upload(client, write_jsonl(summarization_rows(12), folder / "sum.jsonl")),
        "preferences": upload(client, write_jsonl(preference_rows(12), folder / "pref.jsonl")),
    }


def body(model: Path, dataset: str, **overrides: Any) -> dict[str, Any]:
    return {"task": "text-generation", "model_name": str(model), "provider": "huggingface", "strategy": "sft",
            "dataset": dataset, "num_train_epochs": 1, "per_device_train_batch_size": 2, "max_seq_length": 64,
            "learning_rate": 1e-3} | overrides


REFUSED_STARTS = [
    ("dpo-on-qa", "preferences", {"task": "extractive-question-answering", "strategy": "dpo"}, "strategy", "sft"),
    ("rlhf-on-summaries", "preferences", {"task": "summarization", "strategy": "rlhf"}, "strategy", "sft"),
    ("unsloth-without-gpu", "generation", {"provider": "unsloth"}, "provider", "unsloth requires an NVIDIA GPU"),
    ("summaries-for-generation", "summaries", {}, "dataset", "line 1"),
    ("generation-rows-for-dpo", "generation", {"strategy": "dpo"}, "dataset", "chosen"),
    ("lora-r-zero", "generation", {"lora_r": 0}, "lora_r", ""),
    ("warmup-over-one", "generation", {"warmup_ratio": 1.5}, "warmup_ratio", ""),
    ("unknown-scheduler", "generation", {"lr_scheduler_type": "zigzag"}, "lr_scheduler_type", ""),
    ("unknown-optimizer", "generation", {"optim": "telepathy"}, "optim", ""),
    ("zero-accumulation", "generation", {"gradient_accumulation_steps": 0}, "gradient_accumulation_steps", ""),
    ("zero-epochs", "generation", {"num_train_epochs": 0}, "num_train_epochs", ""),
]


@pytest.mark.parametrize(
    ("dataset", "overrides", "field", "fragment"), [r[1:] for r in REFUSED_STARTS], ids=[r[0] for r in REFUSED_STARTS]
)
def test_refused_starts_are_400_with_the_reason_and_queue_nothing(
    client: httpx.Client, datasets: dict[str, str], tiny_causal_model: Path,
    dataset: str, overrides: dict[str, Any], field: str, fragment: str,
) -> None:
    before = client.get("/api/training_status").json()
    response = client.post("/api/start_training", json=body(tiny_causal_model, datasets[dataset], **overrides))
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert any(field in item["loc"] and fragment in json.dumps(item) for item in detail), detail
    after = client.get("/api/training_status").json()
    assert after == before
    assert after["status"] != "training"


def llama_70b_shaped(folder: Path, tokenizer_from: Path) -> Path:
    """A config.json of Llama-3.1-70B's shape (no weights: the estimate never reads them)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((tokenizer_from / "config.json").read_text())
    config.update({
        "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
        "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
    })
    (folder / "config.json").write_text(json.dumps(config))
    for item in tokenizer_from.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens")):
            (folder / item.name).write_bytes(item.read_bytes())
    return folder


def test_an_oversize_job_is_refused_with_the_estimate_before_anything_is_queued(
    client: httpx.Client, datasets: dict[str, str], tiny_causal_model: Path, tmp_path: Path
) -> None:
    big = llama_70b_shaped(tmp_path / "llama-70b-shape", tiny_causal_model)
    estimate = client.post("/api/finetune/estimate_memory", json={
        "model_name": str(big), "strategy": "sft", "use_4bit": False, "per_device_train_batch_size": 1,
        "max_seq_length": 512})
    assert estimate.status_code == 200, estimate.text
    assert estimate.json()["fits"] is False, estimate.json()

    before = client.get("/api/training_status").json()
    response = client.post("/api/start_training", json=body(big, datasets["generation"], use_4bit=False))
    assert response.status_code == 400, response.text
    assert "GiB" in response.text and "force" in response.text
    assert client.get("/api/training_status").json() == before
