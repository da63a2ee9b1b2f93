"""Issue 18 through the real processes with the real `openai` package: files, supervised and DPO
fine-tuning jobs followed to `succeeded`, a cancelled job, listings that auto-page to their end,
checkpoints, the fine-tuned model listed, chatted with (whole and streamed), completing text and
deleted; malformed files and unknown ids answered as OpenAI answers them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from websockets.sync.client import connect

from modelforge_devkit.sample_data import preference_rows, text_generation_rows
from modelforge_devkit.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FINISHED = ("succeeded", "failed", "cancelled")


def chat_file(n: int) -> bytes:
    rows = text_generation_rows(n, seed=5)
    return "".join(json.dumps({"messages": [{"role": "system", "content": "Answer briefly."}, *r["messages"]]}) + "\n"
                   for r in rows).encode()


def preference_file(n: int) -> bytes:
    lines = []
    for row in preference_rows(n, seed=6):
        lines.append(json.dumps({
            "input": {"messages": [{"role": "user", "content": row["prompt"]}]},
            "preferred_output": [{"role": "assistant", "content": row["chosen"]}],
            "non_preferred_output": [{"role": "assistant", "content": row["rejected"]}],
        }))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="unused-without-keys", max_retries=0,
                timeout=120) as sdk:
        yield sdk


def wait_for(client: OpenAI, job_id: str, statuses: tuple[str, ...], limit_s: float = 600) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def test_the_openai_sdk_fine_tunes_lists_chats_and_deletes(
    client: OpenAI, stack: Stack, tiny_causal_model: Path
) -> None:
    # Files: a chat file and a preference file; a malformed one is refused naming its line.
    chat = client.files.create(file=("chat.jsonl", chat_file(16)), purpose="fine-tune")
    prefs = client.files.create(file=("prefs.jsonl", preference_file(12)), purpose="fine-tune")
    valid = client.files.create(file=("valid.jsonl", chat_file(10)), purpose="fine-tune")
    assert (chat.object, chat.filename, chat.status) == ("file", "chat.jsonl", "processed")
    assert client.files.retrieve(prefs.id).filename == "prefs.jsonl"
    assert {f.id for f in client.files.list()} >= {chat.id, prefs.id}
    assert client.files.content(chat.id).content == chat_file(16)
    assert [json.loads(line) for line in client.files.content(prefs.id).content.splitlines()] == [
        json.loads(line) for line in preference_file(12).splitlines()]
    broken = chat_file(12).splitlines()
    broken[4] = b'{"messages": [{"role": "user", "content": "no answer"}]}'
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("bad.jsonl", b"\n".join(broken)), purpose="fine-tune")
    assert "line 5" in refused.value.message

    # A supervised job and a DPO job, followed to succeeded.
    model = str(tiny_causal_model)
    sft = client.fine_tuning.jobs.create(
        model=model, training_file=chat.id, validation_file=valid.id, suffix="fox", seed=11,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 5}}},
    )
    assert (sft.status, sft.seed, sft.user_provided_suffix) in {("queued", 11, "fox"), ("running", 11, "fox")}
    dpo = client.fine_tuning.jobs.create(
        model=model, training_file=prefs.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "beta": 0.2}}},
    )
    sft_done = wait_for(client, sft.id, FINISHED)
    assert sft_done.status == "succeeded", sft_done.error
    assert sft_done.fine_tuned_model and sft_done.finished_at >= sft_done.created_at
    assert sft_done.trained_tokens and sft_done.trained_tokens > 0
    assert sft_done.validation_file == valid.id
    assert sft_done.hyperparameters.n_epochs == 1 and sft_done.hyperparameters.batch_size == 4
    assert sft_done.hyperparameters.learning_rate_multiplier == pytest.approx(5)
    dpo_done = wait_for(client, dpo.id, FINISHED)
    assert dpo_done.status == "succeeded", dpo_done.error
    assert dpo_done.method.type == "dpo" and dpo_done.method.dpo.hyperparameters.beta == pytest.approx(0.2)

    # Events, newest first, paged by the SDK until the oldest.
    events = list(client.fine_tuning.jobs.list_events(sft.id, limit=3))
    assert events[0].object == "fine_tuning.job.event"
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    assert len({e.id for e in events}) == len(events) > 3
    assert any(e.type == "metrics" and e.data.get("train_loss") is not None for e in events)
    assert any(e.data.get("status") == "completed" for e in events)
    # The same job, on the /api side and its event history (what /ws/training replays).
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as api:
        assert api.get(f"/api/jobs/{sft.id}").json()["status"] == "completed"
        api_events = api.get(f"/api/jobs/{sft.id}/events").json()["events"]
        assert len(api_events) == len(events)
    ws_url = stack.gateway_url.replace("http", "ws", 1) + f"/ws/training?job_id={sft.id}&since=0"
    with connect(ws_url, open_timeout=30) as socket:
        replayed: list[dict[str, Any]] = []
        while len(replayed) < len(events) + 1:  # the current status, then every stored event
            message = json.loads(socket.recv(timeout=30))
            if message["type"] != "heartbeat":
                replayed.append(message)
    assert replayed[0]["status"] == "completed" and replayed[0]["job_id"] == sft.id
    assert sorted(m["seq"] for m in replayed[1:]) == sorted(e["seq"] for e in api_events)

    # A running job cancelled.
    long_job = client.fine_tuning.jobs.create(
        model=model, training_file=chat.id, hyperparameters={"n_epochs": 100, "batch_size": 1})
    assert wait_for(client, long_job.id, ("running", *FINISHED)).status == "running"
    with pytest.raises(openai.ConflictError):
        client.files.delete(chat.id)  # the running job trains on it
    client.fine_tuning.jobs.cancel(long_job.id)
    assert wait_for(client, long_job.id, FINISHED).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(long_job.id)

    # Listings: jobs newest first, auto-paging one at a time until the end; checkpoints.
    listed = [job.id for job in client.fine_tuning.jobs.list(limit=1)]
    assert listed[:3] == [long_job.id, dpo.id, sft.id]
    [checkpoint] = list(client.fine_tuning.jobs.checkpoints.list(sft.id))
    assert checkpoint.fine_tuned_model_checkpoint == sft_done.fine_tuned_model
    assert checkpoint.step_number > 0 and checkpoint.metrics.train_loss is not None

    # The fine-tuned model: listed, retrieved, chatted with, completing text, deleted.
    tuned = sft_done.fine_tuned_model
    model_ids = [m.id for m in client.models.list()]
    assert tuned in model_ids and dpo_done.fine_tuned_model in model_ids and model in model_ids
    assert client.models.retrieve(tuned).id == tuned
    assert client.models.retrieve(model).owned_by == "system"  # the base, by its folder path
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Where do foxes live?"}]
    whole = client.chat.completions.create(model=tuned, messages=messages, max_tokens=8, temperature=0, seed=1)
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 0 and 0 < whole.usage.completion_tokens <= 8
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    chunks = list(client.chat.completions.create(
        model=tuned, messages=messages, max_completion_tokens=8, temperature=0, seed=1, stream=True,
        stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = client.completions.create(model=tuned, prompt="The red fox", max_tokens=5, temperature=0)
    assert text.object == "text_completion" and text.usage.completion_tokens <= 5
    assert client.models.delete(tuned).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(tuned)

    # Unknown ids: 404 in OpenAI's shape.
    for call in (
        lambda: client.fine_tuning.jobs.retrieve("job_does_not_exist"),
        lambda: client.files.retrieve("file-000000000000000000000000"),
        lambda: client.models.retrieve("model_does_not_exist"),
        lambda: client.chat.completions.create(model="model_does_not_exist", messages=messages),
    ):
        with pytest.raises(openai.NotFoundError):
            call()

    deleted = client.files.delete(prefs.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(prefs.id)
