"""Schemathesis hooks for the real-stack fuzz (loaded through SCHEMATHESIS_HOOKS).

What an OpenAPI document cannot say is which model folders and datasets exist on this server, what
this machine's hardware allows, and what bytes make a valid dataset. A schema-valid (positive)
request is refused for those reasons with a truthful 400, so before such a request is sent the
fields that depend on them are pinned to values that exist here; everything else stays as
generated. Negative requests are never touched. Training a pinned request stays small (one step,
small batches) so the fuzz never runs a long or memory-hungry job on a shared machine.

Two kinds of failure are dropped: a 503 naming the Hugging Face Hub (these machines have no route
to the Hub, HF_HUB_OFFLINE=1, and "the Hub cannot be reached" is the truthful answer there), and
a response slower than schemathesis's default 10 s limit (timing belongs in bench/).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from schemathesis.core.failures import Failure, ResponseTimeExceeded, ServerError

FUZZ_MODEL = "MODELFORGE_FUZZ_MODEL"  # a local causal LM folder
FUZZ_DATASET = "MODELFORGE_FUZZ_DATASET"  # an uploaded prompt/completion dataset's filename

TRAINING_STARTS = frozenset({"/api/start_training", "/api/jobs", "/api/finetune/start_training"})
MODEL_NAMED = frozenset({"/api/finetune/estimate_memory", "/api/finetune/validate_custom_model",
                         "/api/finetune/set_custom_model"})
GENERATION = frozenset({"/api/playground/generate", "/api/playground/new", "/api/playground/stream"})
UPLOAD = "/api/upload_dataset"
INSIGHT = "/api/datasets/{name}/insight"
DATASET_DELETE = "/api/datasets/{name}"

# One pinned run: what this machine and the stored data support, and small enough to finish fast.
PINNED_TRAINING: dict[str, Any] = {
    "task": "text-generation",
    "strategy": "sft",
    "provider": "huggingface",
    "max_steps": 1,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_seq_length": 64,
    "use_4bit": False,
    "bf16": False,
    # Several nodes need the kubeflow backend and several processes a node with that many GPUs (or
    # spare cores): what this machine's trainer is configured with, not something a schema can say.
    "processes_per_node": 1,
    "num_nodes": 1,
}
# Settings whose valid values depend on what exists here (a checkpoint, this exact file).
DROPPED_TRAINING = ("resume_from_job", "dataset_sha256")

VALID_ROWS = b"".join(
    b'{"prompt": "What is %d plus %d?", "completion": "%d."}\n' % (i, i, 2 * i) for i in range(12)
)


def _positive(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


# The upload's file part is declared as JSONL (application/jsonl or x-ndjson): its bytes are sent as they
# are, like application/octet-stream.
schemathesis.serializer.alias("application/jsonl", "application/octet-stream")
schemathesis.serializer.alias("application/x-ndjson", "application/octet-stream")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    path = case.operation.path
    if path == DATASET_DELETE and (case.path_parameters or {}).get("name") == os.environ[FUZZ_DATASET]:
        # Stateful runs (in whatever mode) carry the pinned dataset's name from the insight call to
        # its deletion: every later training start needs it, so an unknown name (404) goes instead.
        case.path_parameters = {**case.path_parameters, "name": "not-the-fuzz-dataset.jsonl"}
    if not _positive(case):
        return
    body = case.body
    if path in TRAINING_STARTS and isinstance(body, dict):
        for name in DROPPED_TRAINING:
            body.pop(name, None)
        body.update(PINNED_TRAINING, model_name=os.environ[FUZZ_MODEL], dataset=os.environ[FUZZ_DATASET])
    elif path in MODEL_NAMED and isinstance(body, dict):
        if path.endswith("estimate_memory"):
            body.update(model_name=os.environ[FUZZ_MODEL], task="text-generation", provider="huggingface")
        else:
            body["repo_name"] = os.environ[FUZZ_MODEL]
    elif path in GENERATION and isinstance(body, dict):
        _fit_the_context(body)
    elif path == UPLOAD and isinstance(body, dict):
        body["file"] = VALID_ROWS.decode()
        # Which columns a mapping may name depends on the file's own columns.
        body.pop("column_mapping", None)
    elif path == INSIGHT:
        # A dataset stored here, read with a tokenizer that exists here.
        case.path_parameters = {**(case.path_parameters or {}), "name": os.environ[FUZZ_DATASET]}
        case.query = {**(case.query or {}), "model": os.environ[FUZZ_MODEL]}


# The fuzz model's context is 512 tokens, and a prompt plus max_new_tokens past it is refused with a
# truthful 400 (which model is served, and its window, is this server's state). Budget: up to 4 bytes
# a character, one token a byte at worst, a few template tokens a message, and 16 new tokens.
CONTEXT_CHARACTERS = 96
MAX_MESSAGES = 8
MAX_NEW_TOKENS = 16


def _shorten(text: str, limit: int) -> str:
    """At most `limit` characters, never blank where the original was not (the schema asks \\S)."""
    short = text[: max(limit, 1)]
    if short.strip() or not text.strip():
        return short
    return text.strip()[0]


def _fit_the_context(body: dict[str, Any]) -> None:
    for name in ("max_new_tokens", "max_length"):
        if isinstance(body.get(name), int | float) and not isinstance(body[name], bool):
            body[name] = min(body[name], MAX_NEW_TOKENS)
    budget = CONTEXT_CHARACTERS
    for name in ("prompt", "question", "context"):
        if isinstance(body.get(name), str):
            body[name] = _shorten(body[name], budget)
            budget = max(budget - len(body[name]), 0)
    messages = body.get("messages")
    if isinstance(messages, list):
        del messages[MAX_MESSAGES:]
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = _shorten(message["content"], budget // max(len(messages), 1))


@schemathesis.hook
def filter_failure(context: Any, failure: Failure, case: Any, response: Any) -> bool:
    """False drops the failure: a 503 that says the Hub cannot be reached, and a slow answer (a
    merge loads a whole model on a busy CPU; speed goals belong in bench/, not in tests)."""
    if isinstance(failure, ResponseTimeExceeded):
        return False
    if isinstance(failure, ServerError) and response.status_code == 503:
        return "Hugging Face Hub" not in response.text
    return True
