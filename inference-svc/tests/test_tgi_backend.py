"""The TGI backend against a small local server that speaks TGI's /generate and
/generate_stream protocol (JSON and server-sent events)."""

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
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from modelforge_common.errors import InvalidArgument, ResourceExhausted, Unavailable
from modelforge_common.testing import asgi_served, free_port
from modelforge_inference.backends.tgi import TgiBackend, tgi_parameters
from modelforge_inference.domain import GenerationParams, ModelRef

WORDS = ["Machine", " learning", " finds", " patterns", " in", " data", "."]
EOS = {"id": 2, "text": "</s>", "logprob": -0.01, "special": True}


@dataclass
class FakeTgi:
    """Answers with WORDS (then an EOS token) up to max_new_tokens, like a TGI server would."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


def _tokens(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    limit = int(parameters.get("max_new_tokens") or 20)
    tokens = [{"id": 10 + i, "text": word, "logprob": -0.5, "special": False} for i, word in enumerate(WORDS)]
    return [*tokens, EOS][:limit]


def _refusal(body: dict[str, Any]) -> Response | None:
    parameters = body.get("parameters", {})
    if "OVERLOADED" in body["inputs"]:
        return JSONResponse({"error": "Model is overloaded", "error_type": "overloaded"}, status_code=429)
    temperature = parameters.get("temperature")
    if temperature is not None and temperature <= 0:
        error = "Input validation error: `temperature` must be strictly positive"
        return JSONResponse({"error": error, "error_type": "validation"}, status_code=422)
    top_p = parameters.get("top_p")
    if top_p is not None and not 0 < top_p < 1:
        error = "Input validation error: `top_p` must be > 0.0 and < 1.0"
        return JSONResponse({"error": error, "error_type": "validation"}, status_code=422)
    return None


def _app(fake: FakeTgi) -> Starlette:
    async def generate(request: Request) -> Response:
        body = await request.json()
        fake.requests.append({"route": "generate", **body})
        if (refusal := _refusal(body)) is not None:
            return refusal
        tokens = _tokens(body.get("parameters", {}))
        text = "".join(t["text"] for t in tokens if not t["special"])
        details = {"finish_reason": "eos_token" if tokens[-1]["special"] else "length",
                   "generated_tokens": len(tokens), "seed": None, "prefill": [], "tokens": tokens}
        return JSONResponse({"generated_text": text, "details": details})

    async def generate_stream(request: Request) -> Response:
        body = await request.json()
        fake.requests.append({"route": "generate_stream", **body})
        if (refusal := _refusal(body)) is not None:
            return refusal
        tokens = _tokens(body.get("parameters", {}))

        async def events() -> AsyncIterator[str]:
            for index, token in enumerate(tokens):
                last = index == len(tokens) - 1
                event = {
                    "index": index,
                    "token": token,
                    "generated_text": "".join(t["text"] for t in tokens if not t["special"]) if last else None,
                    "details": {"finish_reason": "length", "generated_tokens": len(tokens), "seed": None}
                    if last else None,
                }
                yield f"data: {json.dumps(event)}\n\n"
                await asyncio.sleep(0)

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/generate", generate, methods=["POST"]),
                             Route("/generate_stream", generate_stream, methods=["POST"])])


@pytest.fixture
async def fake_tgi() -> AsyncIterator[FakeTgi]:
    port = free_port()
    fake = FakeTgi(url=f"http://127.0.0.1:{port}")
    async with asgi_served(_app(fake), port):
        yield fake


GREEDY = GenerationParams(prompt="What is machine learning?", max_new_tokens=50)


async def test_generate_sends_a_greedy_request_and_reads_the_details(
    fake_tgi: FakeTgi, refs: dict[str, ModelRef]
) -> None:
    result = await TgiBackend(fake_tgi.url).generate(refs["lora"], GREEDY)
    assert result.generated_text == "".join(WORDS)
    assert result.tokens_generated == len(WORDS) + 1
    [sent] = fake_tgi.requests
    assert sent["route"] == "generate"
    # The adapter folder's chat template formats the prompt, as in training.
    assert sent["inputs"] == "<|user|>\nWhat is machine learning?</s>\n<|assistant|>\n"
    assert sent["parameters"]["do_sample"] is False
    assert "temperature" not in sent["parameters"]
    assert sent["parameters"]["adapter_id"] == "lora-model"
    assert sent["parameters"]["max_new_tokens"] == 50


async def test_sampling_parameters_are_forwarded(fake_tgi: FakeTgi, refs: dict[str, ModelRef]) -> None:
    params = dataclasses.replace(GREEDY, temperature=0.7, top_p=0.9, top_k=5, repetition_penalty=1.1, max_new_tokens=3)
    result = await TgiBackend(fake_tgi.url).generate(refs["full"], params)
    assert result.generated_text == "".join(WORDS[:3])
    sent = fake_tgi.requests[0]["parameters"]
    assert (sent["do_sample"], sent["temperature"], sent["top_p"], sent["top_k"], sent["repetition_penalty"]) == (
        True, 0.7, 0.9, 5, 1.1)
    assert "adapter_id" not in sent


def test_neutral_values_tgi_refuses_are_left_out(refs: dict[str, ModelRef]) -> None:
    sent = tgi_parameters(refs["full"], dataclasses.replace(GREEDY, temperature=0.5, top_p=1.0, top_k=0))
    assert "top_p" not in sent
    assert "top_k" not in sent


async def test_stream_yields_token_texts_that_join_to_the_generated_text(
    fake_tgi: FakeTgi, refs: dict[str, ModelRef]
) -> None:
    backend = TgiBackend(fake_tgi.url)
    whole = await backend.generate(refs["lora"], GREEDY)
    chunks = [chunk async for chunk in backend.generate_stream(refs["lora"], GREEDY)]
    assert [chunk.text for chunk in chunks[:-1]] == WORDS  # the special EOS token is not text
    assert chunks[-1].finished
    assert chunks[-1].tokens_generated == len(WORDS) + 1
    assert "".join(chunk.text for chunk in chunks) == whole.generated_text
    assert fake_tgi.requests[-1]["route"] == "generate_stream"


async def test_a_model_without_local_files_gets_the_raw_prompt(fake_tgi: FakeTgi) -> None:
    ref = ModelRef("hub", "org/some-model", "/nonexistent/adapter", "text-generation", "full", {})
    await TgiBackend(fake_tgi.url).generate(ref, GREEDY)
    assert fake_tgi.requests[0]["inputs"] == "What is machine learning?"


async def test_tgi_validation_errors_are_invalid_argument(fake_tgi: FakeTgi, refs: dict[str, ModelRef]) -> None:
    # Bypass our own parameter mapping to make the server refuse the request.
    backend = TgiBackend(fake_tgi.url)
    ref = refs["full"]
    # A sampled request (a greedy one sends no temperature) with a top_p the fake server refuses.
    params = dataclasses.replace(GREEDY, temperature=0.7, top_p=-0.5)
    with pytest.raises(InvalidArgument, match="top_p"):
        await backend.generate(ref, params)
    with pytest.raises(InvalidArgument):
        async for _chunk in backend.generate_stream(ref, params):
            pass


async def test_an_overloaded_server_is_resource_exhausted(fake_tgi: FakeTgi, refs: dict[str, ModelRef]) -> None:
    with pytest.raises(ResourceExhausted):
        await TgiBackend(fake_tgi.url).generate(refs["full"], dataclasses.replace(GREEDY, prompt="OVERLOADED"))


async def test_an_unreachable_server_is_unavailable(refs: dict[str, ModelRef]) -> None:
    backend = TgiBackend(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    with pytest.raises(Unavailable, match="unreachable"):
        await backend.generate(refs["full"], GREEDY)
    with pytest.raises(Unavailable, match="unreachable"):
        async for _chunk in backend.generate_stream(refs["full"], GREEDY):
            pass


def test_tgi_serves_generation_but_not_extractive_qa() -> None:
    backend = TgiBackend("http://127.0.0.1:1")
    assert backend.serves("text-generation") and backend.serves("summarization")
    assert not backend.serves("extractive-question-answering")


async def test_service_over_grpc_routes_generation_to_tgi_and_qa_to_the_local_backend(
    fake_tgi: FakeTgi, refs: dict[str, ModelRef]
) -> None:
    from modelforge.v1 import inference_pb2, inference_pb2_grpc
    from modelforge_common.grpc_client import make_channel
    from modelforge_common.grpc_server import build_server, service_name
    from modelforge_inference.__main__ import build_publisher, build_service
    from modelforge_inference.servicer import InferenceServicer
    from modelforge_inference.settings import InferenceSettings

    settings = InferenceSettings(tgi_url=fake_tgi.url, inference_device="cpu")
    service = build_service(settings)
    publisher = build_publisher(settings)
    name = service_name(inference_pb2, "InferenceService")
    server, port, _ = build_server(
        [(inference_pb2_grpc.add_InferenceServiceServicer_to_server, InferenceServicer(service, publisher), name)],
        "127.0.0.1:0",
    )
    await server.start()
    channel = make_channel(f"127.0.0.1:{port}")
    stub = inference_pb2_grpc.InferenceServiceStub(channel)

    def pb(ref: ModelRef) -> inference_pb2.ModelRef:
        return inference_pb2.ModelRef(model_id=ref.model_id, base_model=ref.base_model, path=ref.path, task=ref.task,
                                      adapter_type=ref.adapter_type, file_sha256=ref.file_sha256)

    try:
        params = inference_pb2.GenerationParams(prompt="What is machine learning?", max_new_tokens=50)
        reply = await stub.Generate(inference_pb2.GenerateRequest(model=pb(refs["lora"]), params=params), timeout=30)
        assert reply.generated_text == "".join(WORDS)
        chunks = [c async for c in stub.GenerateStream(inference_pb2.GenerateStreamRequest(
            model=pb(refs["lora"]), params=params))]
        assert "".join(c.text for c in chunks) == reply.generated_text
        assert chunks[-1].finished and chunks[-1].tokens_generated == len(WORDS) + 1

        context = "Ada Lovelace wrote the first program in London."
        qa = inference_pb2.GenerationParams(context=context, question="Who wrote it?")
        answer = await stub.Generate(inference_pb2.GenerateRequest(model=pb(refs["qa"]), params=qa), timeout=60)
        assert answer.generated_text in context
        assert [r["route"] for r in fake_tgi.requests] == ["generate", "generate_stream"]
    finally:
        await channel.close()
        await server.stop(None)
        await service.close()


async def test_stop_seed_finish_reason_and_prompt_tokens(fake_tgi: FakeTgi, refs: dict[str, ModelRef]) -> None:
    backend = TgiBackend(fake_tgi.url)
    ended = await backend.generate(refs["lora"], GREEDY)
    assert ended.finish_reason == "stop" and ended.prompt_tokens > 5  # counted with the adapter's tokenizer
    capped = await backend.generate(refs["lora"], dataclasses.replace(GREEDY, max_new_tokens=3))
    assert capped.finish_reason == "length"
    params = dataclasses.replace(GREEDY, stop=(" patterns",), seed=11)
    # TGI returns the text up to and including the stop sequence; the API leaves it out.
    stopped = await backend.generate(refs["lora"], params)
    assert stopped.generated_text == "Machine learning finds"
    assert (fake_tgi.requests[-1]["parameters"]["stop"], fake_tgi.requests[-1]["parameters"]["seed"]) == (
        [" patterns"], 11)
    chunks = [chunk async for chunk in backend.generate_stream(refs["lora"], params)]
    assert "".join(chunk.text for chunk in chunks) == "Machine learning finds"
    assert chunks[-1].prompt_tokens == ended.prompt_tokens and chunks[-1].finish_reason in ("stop", "length")
