"""The vLLM backend against an in-process fake of vLLM's OpenAI-compatible HTTP API: every request
is recorded and checked; streamed answers are replayed as vLLM sends them (SSE chunks, a usage
chunk, then [DONE])."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from modelforge_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from modelforge_common.testing import asgi_served, free_port
from modelforge_inference.__main__ import build_service
from modelforge_inference.backends.vllm import VllmBackend, sampling_body
from modelforge_inference.domain import ChatMessage, GenerationParams, ModelRef, RequestedParams
from modelforge_inference.settings import InferenceSettings

WORDS = ["Machine", " learning", " finds", " patterns", " in", " data", "."]
BASE_NAME = "/models/tiny-llama"


@dataclass
class FakeVllm:
    """Serves BASE_NAME plus the LoRA adapters loaded at run time, answering with WORDS."""

    url: str
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    adapters: dict[str, str] = field(default_factory=dict)
    missing_paths: set[str] = field(default_factory=set)

    def routes(self) -> list[str]:
        return [route for route, _ in self.requests]


def _words(body: dict[str, Any]) -> tuple[list[str], str]:
    limit = int(body.get("max_tokens") or 16)
    words = WORDS[:limit]
    for stop in body.get("stop") or []:
        text = "".join(words)
        if stop in text:
            cut = text[: text.index(stop)]
            kept: list[str] = []
            for word in words:
                if len("".join(kept) + word) > len(cut):
                    break
                kept.append(word)
            return kept, "stop"
    return words, "length" if limit < len(WORDS) else "stop"


def _app(fake: FakeVllm) -> Starlette:
    def known(model: str) -> bool:
        return model == BASE_NAME or model in fake.adapters

    async def models(request: Request) -> Response:
        fake.requests.append(("models", {}))
        data = [{"id": BASE_NAME, "object": "model"}] + [{"id": n, "object": "model", "parent": BASE_NAME}
                                                          for n in fake.adapters]
        return JSONResponse({"object": "list", "data": data})

    async def load_lora(request: Request) -> Response:
        body = await request.json()
        fake.requests.append(("load_lora_adapter", body))
        if body["lora_name"] in fake.adapters:
            return PlainTextResponse(f"The lora adapter '{body['lora_name']}' has already been loaded.", 400)
        if body["lora_path"] in fake.missing_paths:
            return JSONResponse({"error": {"message": f"No adapter found for {body['lora_path']}"}}, 404)
        fake.adapters[body["lora_name"]] = body["lora_path"]
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def unload_lora(request: Request) -> Response:
        body = await request.json()
        fake.requests.append(("unload_lora_adapter", body))
        fake.adapters.pop(body["lora_name"], None)
        return PlainTextResponse("Success")

    def completion(route: str):  # type: ignore[no-untyped-def]
        async def handler(request: Request) -> Response:
            body = await request.json()
            fake.requests.append((route, body))
            if not known(body["model"]):
                return JSONResponse({"error": {"message": f"The model `{body['model']}` does not exist."}}, 404)
            if body.get("temperature", 1) < 0:
                return JSONResponse({"error": {"message": "temperature must be non-negative"}}, 400)
            words, reason = _words(body)
            usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
            chat = route == "chat"
            if not body.get("stream"):
                choice: dict[str, Any] = {"index": 0, "finish_reason": reason}
                if chat:
                    choice["message"] = {"role": "assistant", "content": "".join(words)}
                else:
                    choice["text"] = "".join(words)
                return JSONResponse({"id": "x", "choices": [choice], "usage": usage})

            async def events() -> AsyncIterator[str]:
                for index, word in enumerate(words):
                    last = index == len(words) - 1
                    piece = {"delta": {"content": word}} if chat else {"text": word}
                    choice = {"index": 0, **piece, "finish_reason": reason if last else None}
                    yield f"data: {json.dumps({'id': 'x', 'choices': [choice], 'usage': None})}\n\n"
                    await asyncio.sleep(0)
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return handler

    return Starlette(routes=[
        Route("/v1/models", models),
        Route("/v1/load_lora_adapter", load_lora, methods=["POST"]),
        Route("/v1/unload_lora_adapter", unload_lora, methods=["POST"]),
        Route("/v1/completions", completion("completions"), methods=["POST"]),
        Route("/v1/chat/completions", completion("chat"), methods=["POST"]),
    ])


@pytest.fixture
async def fake_vllm() -> AsyncIterator[FakeVllm]:
    port = free_port()
    fake = FakeVllm(url=f"http://127.0.0.1:{port}")
    async with asgi_served(_app(fake), port):
        yield fake


GREEDY = GenerationParams(prompt="What is machine learning?", max_new_tokens=50)


async def test_a_lora_model_is_loaded_on_first_use_and_addressed_by_name(
    fake_vllm: FakeVllm, refs: dict[str, ModelRef]
) -> None:
    backend = VllmBackend(fake_vllm.url)
    first = await backend.generate(refs["lora"], GREEDY)
    second = await backend.generate(refs["lora"], GREEDY)
    assert first.generated_text == second.generated_text == "".join(WORDS)
    assert (first.tokens_generated, first.prompt_tokens, first.finish_reason) == (len(WORDS), 11, "stop")
    assert fake_vllm.routes() == ["load_lora_adapter", "completions", "completions"]
    load = fake_vllm.requests[0][1]
    assert load == {"lora_name": "lora-model", "lora_path": refs["lora"].path}
    sent = fake_vllm.requests[1][1]
    assert sent["model"] == "lora-model"
    # The adapter folder's chat template formats the prompt, as in training.
    assert sent["prompt"] == "<|user|>\nWhat is machine learning?</s>\n<|assistant|>\n"
    assert sent["add_special_tokens"] is False
    assert (sent["max_tokens"], sent["temperature"]) == (50, 0.0)
    assert "top_p" not in sent and "stream" not in sent
    await backend.close()


async def test_an_adapter_already_in_the_server_is_used_as_is(fake_vllm: FakeVllm, refs: dict[str, ModelRef]) -> None:
    fake_vllm.adapters["lora-model"] = refs["lora"].path
    backend = VllmBackend(fake_vllm.url)
    assert (await backend.generate(refs["lora"], GREEDY)).generated_text == "".join(WORDS)
    assert fake_vllm.routes() == ["load_lora_adapter", "completions"]
    await backend.close()


async def test_a_missing_adapter_folder_is_a_failed_precondition(
    fake_vllm: FakeVllm, refs: dict[str, ModelRef]
) -> None:
    fake_vllm.missing_paths.add(refs["lora"].path)
    backend = VllmBackend(fake_vllm.url)
    with pytest.raises(FailedPrecondition, match="could not load the LoRA adapter"):
        await backend.generate(refs["lora"], GREEDY)
    assert "completions" not in fake_vllm.routes()
    await backend.close()


async def test_a_merged_model_is_addressed_by_the_name_vllm_serves(
    fake_vllm: FakeVllm, refs: dict[str, ModelRef]
) -> None:
    backend = VllmBackend(fake_vllm.url)
    merged = dataclasses.replace(refs["full"], model_id="merged-model", path=BASE_NAME, base_model=BASE_NAME)
    await backend.generate(merged, GREEDY)
    assert fake_vllm.routes() == ["models", "completions"]
    assert fake_vllm.requests[1][1]["model"] == BASE_NAME
    unknown = dataclasses.replace(merged, model_id="other", path="/models/other", base_model="/models/other")
    with pytest.raises(NotFound, match="--served-model-name other"):
        await backend.generate(unknown, GREEDY)
    await backend.close()


async def test_chat_messages_go_to_chat_completions_with_sampling_stop_and_seed(
    fake_vllm: FakeVllm, refs: dict[str, ModelRef]
) -> None:
    backend = VllmBackend(fake_vllm.url)
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello"),
                ChatMessage("user", "What is ML?"))
    params = GenerationParams(messages=messages, max_new_tokens=20, temperature=0.7, top_p=0.9, top_k=5,
                              repetition_penalty=1.1, stop=(" patterns",), seed=3)
    result = await backend.generate(refs["lora"], params)
    assert result.generated_text == "Machine learning finds"
    assert result.finish_reason == "stop"
    route, sent = fake_vllm.requests[-1]
    assert route == "chat"
    assert sent["messages"] == [{"role": m.role, "content": m.content} for m in messages]
    assert {k: sent[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed")} == {
        "temperature": 0.7, "top_p": 0.9, "top_k": 5, "repetition_penalty": 1.1, "stop": [" patterns"], "seed": 3}
    await backend.close()


async def test_a_streamed_answer_is_replayed_piece_by_piece_with_totals(
    fake_vllm: FakeVllm, refs: dict[str, ModelRef]
) -> None:
    backend = VllmBackend(fake_vllm.url)
    params = dataclasses.replace(GREEDY, max_new_tokens=4)
    chunks = [c async for c in backend.generate_stream(refs["lora"], params)]
    assert [c.text for c in chunks[:-1]] == WORDS[:4]
    last = chunks[-1]
    assert last.finished and (last.tokens_generated, last.prompt_tokens, last.finish_reason) == (4, 11, "length")
    sent = fake_vllm.requests[-1][1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    chat = [c async for c in backend.generate_stream(refs["lora"], GenerationParams(
        messages=(ChatMessage("user", "Hi"),), max_new_tokens=50))]
    assert "".join(c.text for c in chat) == "".join(WORDS) and chat[-1].finish_reason == "stop"
    assert fake_vllm.requests[-1][0] == "chat"
    await backend.close()


async def test_unload_removes_a_loaded_adapter(fake_vllm: FakeVllm, refs: dict[str, ModelRef]) -> None:
    backend = VllmBackend(fake_vllm.url)
    assert not await backend.unload("lora-model")
    await backend.generate(refs["lora"], GREEDY)
    assert await backend.unload("lora-model")
    assert fake_vllm.requests[-1] == ("unload_lora_adapter", {"lora_name": "lora-model"})
    assert "lora-model" not in fake_vllm.adapters
    await backend.generate(refs["lora"], GREEDY)  # loaded again on next use
    assert fake_vllm.routes().count("load_lora_adapter") == 2
    await backend.close()


async def test_server_errors_map_to_statuses(fake_vllm: FakeVllm, refs: dict[str, ModelRef]) -> None:
    backend = VllmBackend(fake_vllm.url)
    with pytest.raises(InvalidArgument, match="temperature must be non-negative"):
        # Validation normally stops this first; here the server's own refusal is checked.
        await backend.generate(refs["lora"], dataclasses.replace(GREEDY, temperature=-1.0))
    await backend.close()
    gone = VllmBackend(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(Unavailable, match="unreachable"):
        await gone.generate(refs["lora"], GREEDY)
    await gone.close()


async def test_the_service_sends_generation_to_vllm_when_configured(
    fake_vllm: FakeVllm, refs: dict[str, ModelRef], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFORGE_VLLM_URL", fake_vllm.url)
    monkeypatch.setenv("MODELFORGE_TGI_URL", "http://tgi.invalid:8080")
    service = build_service(InferenceSettings())
    assert isinstance(service.remote, VllmBackend)
    result = await service.generate(refs["lora"], RequestedParams(prompt="Hi", max_new_tokens=3))
    assert result.generated_text == "".join(WORDS[:3]) and result.finish_reason == "length"
    # Extractive QA stays local.
    assert service.backend_for("extractive-question-answering") is service.local
    await service.close()


def test_greedy_sends_no_sampling_knobs() -> None:
    assert sampling_body(GenerationParams(max_new_tokens=5, top_k=3)) == {"max_tokens": 5, "temperature": 0.0}

