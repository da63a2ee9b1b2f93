"""The protobuf requests of the /v1 routes: a file's upload and read, a fine-tuning job's config and
submission, a page of jobs, and the generation requests of the completions (objects.py renders the
answers)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable

from modelforge.v1 import common_pb2, inference_pb2, registry_pb2, trainer_pb2
from modelforge_gateway.openai import objects
from modelforge_gateway.openai.schemas import (
    CreateFineTuningJob,
    DpoHyperparameters,
    GenerationBody,
    Hyperparameters,
)

# --- files -------------------------------------------------------------------------------------------


async def upload_messages(
    name: str, content: bytes, chunk_bytes: int
) -> AsyncIterator[registry_pb2.UploadDatasetRequest]:
    """UploadDataset's request stream: the stored name first, then the content in chunks."""
    yield registry_pb2.UploadDatasetRequest(filename=name)
    for start in range(0, len(content), chunk_bytes):
        yield registry_pb2.UploadDatasetRequest(chunk=content[start : start + chunk_bytes])


def read_request(stored_name: str) -> registry_pb2.ReadDatasetRequest:
    return registry_pb2.ReadDatasetRequest(name=stored_name)


# --- fine-tuning jobs -------------------------------------------------------------------------------


def training_config(
    body: CreateFineTuningJob, strategy: str, params: Hyperparameters | None, dataset: str, eval_dataset: str | None
) -> common_pb2.TrainingConfig:
    """The job's TrainingConfig; `params` is the hyperparameters object the method chose (or None)."""
    config = common_pb2.TrainingConfig(
        task="text-generation",
        model_name=body.model,
        provider="huggingface",
        strategy=strategy,
        dataset=dataset,
        # OpenAI picks a seed when none is given, and reports it.
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        name=objects.model_name_for(body.model, body.suffix, secrets.token_hex(4)),
    )
    if eval_dataset is not None:
        config.eval_dataset = eval_dataset
    if params is not None:
        if isinstance(params.n_epochs, int):
            config.num_train_epochs = float(params.n_epochs)
        if isinstance(params.batch_size, int):
            config.per_device_train_batch_size = params.batch_size
        if isinstance(params.learning_rate_multiplier, float | int):
            config.learning_rate = objects.BASE_LEARNING_RATE * float(params.learning_rate_multiplier)
        if isinstance(params, DpoHyperparameters) and isinstance(params.beta, float | int):
            config.dpo_beta = float(params.beta)
    return config


def submit_request(
    config: common_pb2.TrainingConfig, idempotency_key: str | None, owner: str
) -> trainer_pb2.SubmitTrainingJobRequest:
    return trainer_pb2.SubmitTrainingJobRequest(config=config, idempotency_key=idempotency_key or "", owner=owner)


def jobs_page_request(limit: int, offset: int) -> trainer_pb2.ListTrainingJobsRequest:
    return trainer_pb2.ListTrainingJobsRequest(limit=limit, offset=offset)


# --- chat and text completions ----------------------------------------------------------------------


def generation_params(
    body: GenerationBody,
    max_tokens: int | None,
    *,
    prompt: str = "",
    turns: Iterable[tuple[str, str]] = (),
) -> inference_pb2.GenerationParams:
    """The sampling settings of a completion, with its prompt (text) or its turns (chat)."""
    params = inference_pb2.GenerationParams(
        max_new_tokens=max_tokens or 0,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=body.stop_list(),
        prompt=prompt,
        messages=[inference_pb2.ChatMessage(role=role, content=text) for role, text in turns],
    )
    if body.seed is not None:
        params.seed = body.seed
    return params


def generate_request(
    model: inference_pb2.ModelRef, params: inference_pb2.GenerationParams
) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(model=model, params=params)


def stream_request(
    model: inference_pb2.ModelRef, params: inference_pb2.GenerationParams
) -> inference_pb2.GenerateStreamRequest:
    return inference_pb2.GenerateStreamRequest(model=model, params=params)
