# ruff: noqa: N802 - servicer methods carry the gRPC method names
"""The /v1 routes against in-process fake services (real gRPC, the real error mapping): what each
route sends to the services and what an OpenAI client gets back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from gateway_fakes import CREATED, FakeInference, FakeRegistry, FakeServices, running_client, settings_for
from openai.types import Completion, CompletionChoice, CompletionUsage, FileObject, Model, ModelDeleted
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice as ChatChoice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from openai.types.fine_tuning.jobs.fine_tuning_job_checkpoint import Metrics as CheckpointMetrics
from pydantic import BaseModel
from test_openai_files import chat_row, jsonl, preference_row

from modelforge.v1 import common_pb2, inference_pb2, registry_pb2
from modelforge_common.errors import NotFound
from modelforge_gateway.openai import objects


class OpenAIRegistry(FakeRegistry):
    """The fake registry plus what /v1/files needs: fields of a dataset, its bytes, its deletion."""

    def reset(self) -> None:
        super().reset()
        self.contents: dict[str, bytes] = {}
        self.deleted: list[str] = []

    async def UploadDataset(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        messages = [m async for m in request_iterator]

        async def again() -> AsyncIterator[Any]:
            for message in messages:
                yield message

        reply = await super().UploadDataset(again(), context)
        content = b"".join(m.chunk for m in messages if m.WhichOneof("part") == "chunk")
        fields = sorted({key for line in content.splitlines() if line.strip() for key in json.loads(line)})
        reply.dataset.fields.extend(fields)
        self.datasets[reply.dataset.filename] = reply.dataset
        self.contents[reply.dataset.filename] = content
        return reply

    async def ReadDataset(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if request.name not in self.contents:
            raise NotFound(f"Dataset {request.name} not found")
        content = self.contents[request.name]
        for start in range(0, len(content), 100):
            yield registry_pb2.ReadDatasetResponse(chunk=content[start : start + 100])

    async def DeleteDataset(self, request: Any, context: Any) -> Any:
        if request.name not in self.datasets:
            raise NotFound(f"Dataset {request.name} not found")
        self.deleted.append(request.name)
        del self.datasets[request.name]
        return registry_pb2.DeleteDatasetResponse()


class ChatInference(FakeInference):
    """Echoes the last chat turn (or the prompt), with the usage fields inference fills in."""

    def _text(self, params: inference_pb2.GenerationParams) -> str:
        source = params.messages[-1].content if params.messages else params.prompt
        return " ".join(f"echo {source}".split()[: params.max_new_tokens or 100])

    async def Generate(self, request: Any, context: Any) -> Any:
        reply = await super().Generate(request, context)
        reply.prompt_tokens = 7
        reply.finish_reason = "length" if request.params.max_new_tokens == 1 else "stop"
        return reply

    async def GenerateStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for piece in super().GenerateStream(request, context):
            if piece.finished:
                piece.prompt_tokens = 7
                piece.finish_reason = "stop"
            yield piece


@pytest.fixture(scope="module")
def openai_services() -> Iterator[FakeServices]:
    running = FakeServices(registry=OpenAIRegistry(), inference=ChatInference())
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def client(openai_services: FakeServices) -> AsyncIterator[httpx.AsyncClient]:
    openai_services.reset()
    async with running_client(settings_for(openai_services)) as (_, http):
        yield http


@pytest.fixture
def fakes(openai_services: FakeServices) -> FakeServices:
    return openai_services


async def upload(client: httpx.AsyncClient, content: bytes, name: str = "train.jsonl") -> httpx.Response:
    return await client.post(
        "/v1/files", files={"file": (name, content, "application/jsonl")}, data={"purpose": "fine-tune"}
    )


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    return error


# --- files -----------------------------------------------------------------------------------------


async def test_file_upload_list_retrieve_content_delete(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    rows = [preference_row(i) for i in range(10)]
    created = (await upload(client, jsonl(rows), "prefs.jsonl")).json()
    assert created["id"].startswith("file-") and created["object"] == "file"
    assert (created["filename"], created["purpose"], created["status"]) == ("prefs.jsonl", "fine-tune", "processed")
    assert created["created_at"] == CREATED.seconds and created["bytes"] > 0
    assert fakes.registry.datasets[f"{created['id']}.prefs.jsonl"].num_examples == 10

    listed = (await client.get("/v1/files")).json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [f["id"] for f in listed["data"]] == [created["id"]]
    assert (await client.get(f"/v1/files/{created['id']}")).json() == created

    content = await client.get(f"/v1/files/{created['id']}/content")
    assert [json.loads(line) for line in content.content.splitlines()] == rows

    deleted = (await client.delete(f"/v1/files/{created['id']}")).json()
    assert deleted == {"id": created["id"], "object": "file", "deleted": True}
    assert fakes.registry.deleted == [f"{created['id']}.prefs.jsonl"]
    assert_openai_error(await client.get(f"/v1/files/{created['id']}"), 404)


async def test_a_malformed_file_is_refused_naming_the_line(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    lines = [json.dumps(chat_row(i)) for i in range(12)]
    lines[6] = '{"messages": [{"role": "robot", "content": "beep"}]}'
    error = assert_openai_error(await upload(client, "\n".join(lines).encode()), 400, "messages[0].role")
    assert error["message"].startswith("Invalid fine-tuning file: line 7: messages[0].role")
    assert error["code"] == "invalid_file_format"
    assert fakes.registry.datasets == {}

    wrong_purpose = await client.post(
        "/v1/files", files={"file": ("a.jsonl", b"{}", "application/jsonl")}, data={"purpose": "assistants"}
    )
    assert_openai_error(wrong_purpose, 400, "purpose")
    missing_purpose = await client.post("/v1/files", files={"file": ("a.jsonl", b"{}", "application/jsonl")})
    assert "purpose" in assert_openai_error(missing_purpose, 400, "purpose")["message"]


@pytest.mark.parametrize("path", ["/v1/files/file-nope", "/v1/files/file-nope/content"])
async def test_unknown_files_are_404(client: httpx.AsyncClient, path: str) -> None:
    error = assert_openai_error(await client.get(path), 404)
    assert error["message"] == "No file found with id 'file-nope'."


# --- fine-tuning jobs --------------------------------------------------------------------------------


async def test_a_supervised_job_is_queued_with_the_requested_settings(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    file_id = (await upload(client, jsonl([chat_row(i) for i in range(12)]))).json()["id"]
    body = {
        "model": "/models/tiny-llama", "training_file": file_id, "suffix": "fox", "seed": 7,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}}},
    }
    response = await client.post("/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "abc"})
    assert response.status_code == 200, response.text
    job = response.json()
    config = fakes.trainer.queued[job["id"]].config
    assert (config.task, config.strategy, config.provider) == ("text-generation", "sft", "huggingface")
    assert (config.model_name, config.dataset) == ("/models/tiny-llama", f"{file_id}.train.jsonl")
    assert (config.num_train_epochs, config.learning_rate, config.seed) == (2, pytest.approx(1e-4), 7)
    assert not config.HasField("per_device_train_batch_size")
    assert config.name.startswith("tiny-llama:ft-fox:")
    assert not config.HasField("eval_dataset")
    assert fakes.trainer.by_idempotency_key == {"abc": job["id"]}

    assert job["object"] == "fine_tuning.job" and job["status"] == "queued"
    assert (job["training_file"], job["model"], job["seed"]) == (file_id, "/models/tiny-llama", 7)
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}
    assert job["method"] == {"type": "supervised", "supervised": {"hyperparameters": job["hyperparameters"]}}
    assert job["user_provided_suffix"] == "fox" and job["validation_file"] is None
    assert (job["fine_tuned_model"], job["finished_at"], job["error"], job["trained_tokens"]) == (None,) * 4
    assert job["created_at"] == CREATED.seconds and job["result_files"] == []
    assert job["organization_id"] and job["integrations"] == []
    assert (await client.get(f"/v1/fine_tuning/jobs/{job['id']}")).json() == job


async def test_a_dpo_job_needs_a_preference_file(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    chat_id = (await upload(client, jsonl([chat_row(i) for i in range(12)]))).json()["id"]
    prefs_id = (await upload(client, jsonl([preference_row(i) for i in range(12)]))).json()["id"]
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto"}}}
    refused = await client.post("/v1/fine_tuning/jobs", json={"model": "m", "training_file": chat_id, "method": dpo})
    assert "method.type 'supervised'" in assert_openai_error(refused, 400, "training_file")["message"]
    plain = await client.post("/v1/fine_tuning/jobs", json={"model": "m", "training_file": prefs_id})
    assert "method.type 'dpo'" in assert_openai_error(plain, 400, "training_file")["message"]

    job = (await client.post("/v1/fine_tuning/jobs", json={"model": "m", "training_file": prefs_id, "method": dpo}))
    assert job.status_code == 200, job.text
    config = fakes.trainer.queued[job.json()["id"]].config
    assert config.strategy == "dpo" and not config.HasField("dpo_beta")
    assert job.json()["method"]["type"] == "dpo"
    assert job.json()["method"]["dpo"]["hyperparameters"]["beta"] == 0.1
    dpo["dpo"]["hyperparameters"]["beta"] = 0.3
    tuned = (await client.post("/v1/fine_tuning/jobs", json={"model": "m", "training_file": prefs_id, "method": dpo}))
    assert fakes.trainer.queued[tuned.json()["id"]].config.dpo_beta == pytest.approx(0.3)
    assert tuned.json()["method"]["dpo"]["hyperparameters"]["beta"] == pytest.approx(0.3)
    assert job.json()["user_provided_suffix"] is None


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"training_file": "file-0123456789abcdef01234567"}, "training_file"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
        ({"validation_file": "file-0123456789abcdef01234567"}, "validation_file"),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}}, "method.dpo.hyperparameters.beta"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": "lots"}}, "hyperparameters.n_epochs"),
        ({"suffix": "a b"}, "suffix"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_job_requests_are_400_naming_the_param(
    client: httpx.AsyncClient, fakes: FakeServices, change: dict[str, Any], param: str
) -> None:
    file_id = (await upload(client, jsonl([chat_row(i) for i in range(12)]))).json()["id"]
    body = {"model": "m", "training_file": file_id, **change}
    assert_openai_error(await client.post("/v1/fine_tuning/jobs", json=body), 400, param)
    assert fakes.trainer.queued == {}


async def test_jobs_page_newest_first_and_auto_paging_ends(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    file_id = (await upload(client, jsonl([chat_row(i) for i in range(12)]))).json()["id"]
    for _ in range(5):
        await client.post("/v1/fine_tuning/jobs", json={"model": "m", "training_file": file_id})
    newest_first = [job.job_id for job in reversed(fakes.trainer.queued.values())]
    seen: list[str] = []
    after = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = (await client.get("/v1/fine_tuning/jobs", params=params)).json()
        seen += [job["id"] for job in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == newest_first
    unknown_after = (await client.get("/v1/fine_tuning/jobs", params={"after": "job_nope"})).json()
    assert unknown_after == {"object": "list", "data": [], "has_more": False}


async def test_cancel_and_statuses(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    file_id = (await upload(client, jsonl([chat_row(i) for i in range(12)]))).json()["id"]
    job_id = (await client.post("/v1/fine_tuning/jobs", json={"model": "m", "training_file": file_id})).json()["id"]
    cancelled = (await client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    again = await client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert_openai_error(again, 409)
    assert again.headers["x-should-retry"] == "false"

    job = fakes.trainer.queued[job_id]
    job.status, job.error = common_pb2.JOB_STATUS_ERROR, "CUDA out of memory"
    job.finished_at.CopyFrom(CREATED)
    failed = (await client.get(f"/v1/fine_tuning/jobs/{job_id}")).json()
    assert failed["status"] == "failed" and failed["finished_at"] == CREATED.seconds
    assert failed["error"] == {"code": "training_failed", "message": "CUDA out of memory", "param": None}


async def test_a_succeeded_job_names_its_model_and_checkpoint(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    file_id = (await upload(client, jsonl([chat_row(i) for i in range(12)]))).json()["id"]
    job_id = (await client.post("/v1/fine_tuning/jobs", json={"model": "m", "training_file": file_id})).json()["id"]
    model = fakes.registry.models[1]
    model.metrics["eval_loss"] = 1.5
    model.metrics["trained_tokens"] = 1234
    job = fakes.trainer.queued[job_id]
    job.status, job.model_id, job.current_step, job.total_steps = common_pb2.JOB_STATUS_COMPLETED, model.model_id, 6, 6
    job.finished_at.CopyFrom(CREATED)
    done = (await client.get(f"/v1/fine_tuning/jobs/{job_id}")).json()
    assert (done["status"], done["fine_tuned_model"], done["trained_tokens"]) == ("succeeded", model.model_id, 1234)
    checkpoints = (await client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints")).json()
    assert checkpoints["has_more"] is False
    [checkpoint] = checkpoints["data"]
    assert checkpoint["object"] == "fine_tuning.job.checkpoint"
    assert (checkpoint["fine_tuned_model_checkpoint"], checkpoint["fine_tuning_job_id"]) == (model.model_id, job_id)
    assert checkpoint["step_number"] == 6
    metrics = {k: v for k, v in checkpoint["metrics"].items() if v is not None}
    assert metrics == {"step": 6.0, "train_loss": 0.234, "valid_loss": 1.5, "full_valid_loss": 1.5}


@pytest.mark.parametrize(
    "request_args",
    [
        ("GET", "/v1/fine_tuning/jobs/job_nope"),
        ("GET", "/v1/fine_tuning/jobs/bad.id"),
        ("POST", "/v1/fine_tuning/jobs/job_nope/cancel"),
        ("GET", "/v1/fine_tuning/jobs/job_nope/events"),
        ("GET", "/v1/fine_tuning/jobs/job_nope/checkpoints"),
    ],
)
async def test_unknown_jobs_are_404(client: httpx.AsyncClient, request_args: tuple[str, str]) -> None:
    error = assert_openai_error(await client.request(*request_args), 404)
    assert error["code"] == "fine-tuning_job_not_found" or error["message"].startswith("No fine-tuning job")


# --- models --------------------------------------------------------------------------------------


async def test_models_list_retrieve_delete(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    listed = (await client.get("/v1/models")).json()
    assert listed["object"] == "list"
    ids = [m["id"] for m in listed["data"]]
    assert ids == ["/data/models/tiny-llama", "model_20240315_143021", "model_20240315_143022"]
    assert all(m["object"] == "model" and m["created"] == CREATED.seconds for m in listed["data"])

    tuned = (await client.get("/v1/models/model_20240315_143021")).json()
    assert tuned == {"id": "model_20240315_143021", "object": "model", "created": CREATED.seconds,
                     "owned_by": "modelforge", "shutdown_date": None}
    base = (await client.get("/v1/models//data/models/tiny-llama")).json()
    assert base["id"] == "/data/models/tiny-llama" and base["owned_by"] == "system"
    assert_openai_error(await client.get("/v1/models/1"), 404, "model")
    assert_openai_error(await client.get("/v1/models/nope"), 404, "model")

    assert_openai_error(await client.delete("/v1/models//data/models/tiny-llama"), 400, "model")
    deleted = (await client.delete("/v1/models/model_20240315_143021")).json()
    assert deleted == {"id": "model_20240315_143021", "object": "model", "deleted": True}
    assert 1 not in fakes.registry.models and fakes.inference.unloaded == ["model_20240315_143021"]
    assert_openai_error(await client.delete("/v1/models/model_20240315_143021"), 404, "model")


# --- chat and text completions ---------------------------------------------------------------------


async def test_chat_completion_whole(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    body = {
        "model": "model_20240315_143021",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Where do foxes live?"}]},
        ],
        "temperature": 0, "top_p": 0.5, "max_completion_tokens": 20, "stop": "\n", "seed": 3, "n": 1,
        "user": "someone",
    }
    response = (await client.post("/v1/chat/completions", json=body)).json()
    [request] = fakes.inference.requests
    params = request.params
    assert [(m.role, m.content) for m in params.messages] == [("system", "Be brief."), ("user", "Where do foxes live?")]
    assert (params.temperature, params.top_p, params.max_new_tokens) == (0, 0.5, 20)
    assert (list(params.stop), params.seed, request.model.model_id) == (["\n"], 3, "model_20240315_143021")
    assert response["object"] == "chat.completion" and response["id"].startswith("chatcmpl-")
    assert response["model"] == "model_20240315_143021"
    [choice] = response["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "echo Where do foxes live?"
    assert choice["finish_reason"] == "stop" and choice["index"] == 0
    assert response["usage"]["prompt_tokens"] == 7
    assert response["usage"]["completion_tokens"] == 5 and response["usage"]["total_tokens"] == 12


def sse_data(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


async def test_chat_completion_streamed_ends_with_usage_and_done(client: httpx.AsyncClient) -> None:
    body = {
        "model": "model_20240315_143021", "messages": [{"role": "user", "content": "red fox"}],
        "stream": True, "stream_options": {"include_usage": True},
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo red fox"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


async def test_text_completion_whole_and_streamed(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    whole = (await client.post("/v1/completions", json={"model": "model_20240315_143021", "prompt": "a b c"})).json()
    assert whole["object"] == "text_completion" and whole["choices"][0]["text"] == "echo a b c"
    assert fakes.inference.requests[0].params.max_new_tokens == 16
    assert fakes.inference.requests[0].params.prompt == "a b c"
    assert whole["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    cut = (await client.post("/v1/completions", json={"model": "model_20240315_143021", "prompt": "x",
                                                      "max_tokens": 1})).json()
    assert cut["choices"][0]["finish_reason"] == "length"

    streamed = await client.post(
        "/v1/completions", json={"model": "model_20240315_143021", "prompt": ["a b"], "stream": True}
    )
    data = sse_data(streamed.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "echo a b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("path", "change", "status", "param"),
    [
        ("/v1/chat/completions", {"model": "nope"}, 404, "model"),
        ("/v1/chat/completions", {"model": "/data/models/tiny-llama"}, 400, "model"),
        ("/v1/chat/completions", {"model": "model_20240315_143022"}, 400, "model"),  # a summarization model
        ("/v1/chat/completions", {"n": 2}, 400, "n"),
        ("/v1/chat/completions", {"tools": [{"type": "function"}]}, 400, "tools"),
        ("/v1/chat/completions", {"temperature": 3}, 400, "temperature"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
         "messages[0].content[0]"),
        ("/v1/chat/completions", {"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ("/v1/completions", {"prompt": "", "messages": None}, 400, "prompt"),
        ("/v1/completions", {"prompt": "x", "messages": None, "echo": True}, 400, "echo"),
    ],
)
async def test_bad_generation_requests(
    client: httpx.AsyncClient, fakes: FakeServices, path: str, change: dict[str, Any], status: int, param: str
) -> None:
    body = {"model": "model_20240315_143021", "messages": [{"role": "user", "content": "hi"}], **change}
    assert_openai_error(await client.post(path, json=body), status, param)
    assert fakes.inference.requests == []


async def test_errors_keep_their_api_shape_outside_v1(client: httpx.AsyncClient) -> None:
    api = await client.get("/api/models/nope")
    assert api.status_code == 404 and api.json()["detail"] == "Model nope not found"
    unknown = await client.get("/v1/nothing-here")
    assert assert_openai_error(unknown, 404)["code"] == "unknown_url"
    bad_json = await client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert_openai_error(bad_json, 400)


async def test_v1_takes_the_same_bearer_keys_and_refuses_in_openai_shape(openai_services: FakeServices) -> None:
    openai_services.reset()
    async with running_client(settings_for(openai_services, api_keys="team:sk-test")) as (_, http):
        missing = await http.get("/v1/models")
        assert assert_openai_error(missing, 401)["code"] == "invalid_api_key"
        wrong = await http.get("/v1/models", headers={"Authorization": "Bearer sk-wrong"})
        assert assert_openai_error(wrong, 401)["message"] == "Invalid API key"
        api = await http.get("/api/models")
        assert api.status_code == 401 and "detail" in api.json()
        allowed = await http.get("/v1/models", headers={"Authorization": "Bearer sk-test"})
        assert allowed.status_code == 200


async def test_v1_files_share_the_upload_cap(openai_services: FakeServices) -> None:
    openai_services.reset()
    async with running_client(settings_for(openai_services, max_upload_bytes=1000)) as (_, http):
        too_big = await upload(http, jsonl([chat_row(i) for i in range(40)]))
        assert "larger than the limit" in assert_openai_error(too_big, 413, "file")["message"]
        assert openai_services.registry.datasets == {}


async def test_a_validation_file_becomes_the_jobs_eval_dataset(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    train_id = (await upload(client, jsonl([chat_row(i) for i in range(12)]), "train.jsonl")).json()["id"]
    valid_id = (await upload(client, jsonl([chat_row(i) for i in range(10)]), "valid.jsonl")).json()["id"]
    prefs_id = (await upload(client, jsonl([preference_row(i) for i in range(12)]))).json()["id"]
    body = {"model": "m", "training_file": train_id, "validation_file": valid_id}
    job = (await client.post("/v1/fine_tuning/jobs", json=body)).json()
    assert fakes.trainer.queued[job["id"]].config.eval_dataset == f"{valid_id}.valid.jsonl"
    assert job["validation_file"] == valid_id
    mismatched = await client.post("/v1/fine_tuning/jobs", json={**body, "validation_file": prefs_id})
    assert "method.type 'dpo'" in assert_openai_error(mismatched, 400, "validation_file")["message"]


async def test_an_unexpected_failure_is_a_500_in_openai_shape(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug, with a secret path /etc/shadow")

    monkeypatch.setattr(objects, "model_object", broken)
    response = await client.get("/v1/models")
    error = assert_openai_error(response, 500)
    assert error["message"].startswith("An internal error occurred (request id ")
    assert "shadow" not in response.text and response.headers["x-should-retry"] == "false"


def declared(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


async def test_objects_carry_every_field_the_sdk_declares(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    """The openai package's own types, field by field (extra fields are allowed, missing ones are not)."""
    file = (await upload(client, jsonl([chat_row(i) for i in range(12)]))).json()
    assert declared(FileObject) == set(file)
    job = (await client.post("/v1/fine_tuning/jobs", json={"model": "m", "training_file": file["id"]})).json()
    assert declared(FineTuningJob) <= set(job)
    stored = fakes.trainer.queued[job["id"]]
    stored.status, stored.model_id = common_pb2.JOB_STATUS_COMPLETED, "model_20240315_143021"
    [checkpoint] = (await client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints")).json()["data"]
    assert declared(FineTuningJobCheckpoint) == set(checkpoint)
    assert declared(CheckpointMetrics) == set(checkpoint["metrics"])
    event = objects.event_object({"type": "log", "job_id": job["id"], "seq": 1, "timestamp": None, "message": "m"})
    assert declared(FineTuningJobEvent) == set(event.model_dump())
    model = (await client.get("/v1/models/model_20240315_143021")).json()
    assert declared(Model) == set(model)

    chat_body = {"model": "model_20240315_143021", "messages": [{"role": "user", "content": "hi there"}]}
    chat = (await client.post("/v1/chat/completions", json=chat_body)).json()
    assert declared(ChatCompletion) == set(chat)
    assert declared(ChatChoice) == set(chat["choices"][0])
    assert declared(ChatCompletionMessage) == set(chat["choices"][0]["message"])
    assert declared(CompletionUsage) - {"completion_tokens_details", "prompt_tokens_details"} == set(chat["usage"])
    streamed = await client.post("/v1/chat/completions", json={**chat_body, "stream": True})
    for data in sse_data(streamed.text)[:-1]:
        chunk = json.loads(data)
        assert declared(ChatCompletionChunk) == set(chunk)
        assert all(declared(ChunkChoice) == set(choice) for choice in chunk["choices"])
    text = (await client.post("/v1/completions", json={"model": "model_20240315_143021", "prompt": "x"})).json()
    assert declared(Completion) == set(text)
    assert declared(CompletionChoice) == set(text["choices"][0])
    deleted = (await client.delete("/v1/models/model_20240315_143021")).json()
    assert declared(ModelDeleted) == set(deleted)
