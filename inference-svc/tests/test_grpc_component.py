"""InferenceService over a real grpc.aio server on port 0, called through a real channel."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from modelforge.v1 import inference_pb2, inference_pb2_grpc
from modelforge_common.grpc_client import make_channel, violations_of
from modelforge_common.grpc_server import build_server, service_name
from modelforge_inference.backends.local import LocalBackend
from modelforge_inference.domain import ModelRef
from modelforge_inference.publishing import ModelPublisher
from modelforge_inference.service import InferenceService
from modelforge_inference.servicer import InferenceServicer

CONTEXT = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911 in Stockholm."


def ref_pb(ref: ModelRef) -> inference_pb2.ModelRef:
    return inference_pb2.ModelRef(
        model_id=ref.model_id, base_model=ref.base_model, path=ref.path, task=ref.task,
        adapter_type=ref.adapter_type, file_sha256=ref.file_sha256,
    )


def greedy(prompt: str = "What is machine learning?", max_new_tokens: int = 24) -> inference_pb2.GenerationParams:
    return inference_pb2.GenerationParams(prompt=prompt, max_new_tokens=max_new_tokens, temperature=0.0, top_p=0.9)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def stub(data_dir: Path) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    service = InferenceService(LocalBackend(2, 1 << 30, device="cpu"), default_max_new_tokens=16)
    # No token: pushes fail with a clear precondition error; merges write under data_dir.
    publisher = ModelPublisher(data_dir, hf_token=None)
    name = service_name(inference_pb2, "InferenceService")
    server, port, _health = build_server(
        [(inference_pb2_grpc.add_InferenceServiceServicer_to_server, InferenceServicer(service, publisher), name)],
        "127.0.0.1:0",
    )
    await server.start()
    channel = make_channel(f"127.0.0.1:{port}")
    try:
        yield inference_pb2_grpc.InferenceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(None)
        await service.close()


async def test_generate_returns_new_text_tokens_and_time(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    reply = await stub.Generate(inference_pb2.GenerateRequest(model=ref_pb(refs["lora"]), params=greedy()), timeout=60)
    assert 1 <= reply.tokens_generated <= 24
    assert reply.generation_time_ms >= 0
    assert reply.generated_text
    assert not reply.HasField("score")


async def test_unset_max_new_tokens_uses_the_service_default(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    params = inference_pb2.GenerationParams(prompt="Hello", temperature=0.0)
    reply = await stub.Generate(inference_pb2.GenerateRequest(model=ref_pb(refs["full"]), params=params), timeout=60)
    assert 1 <= reply.tokens_generated <= 16


async def test_stream_yields_pieces_that_join_to_the_greedy_text(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    model = ref_pb(refs["lora"])
    whole = await stub.Generate(inference_pb2.GenerateRequest(model=model, params=greedy()), timeout=60)
    chunks = [c async for c in stub.GenerateStream(inference_pb2.GenerateStreamRequest(model=model, params=greedy()))]
    assert len(chunks) > 2
    assert [c.finished for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert "".join(c.text for c in chunks) == whole.generated_text
    assert chunks[-1].tokens_generated == whole.tokens_generated
    assert chunks[-1].generation_time_ms >= 0


async def test_extractive_qa_answer_is_a_span_of_the_context(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    params = inference_pb2.GenerationParams(context=CONTEXT, question="When did she win in Chemistry?")
    reply = await stub.Generate(inference_pb2.GenerateRequest(model=ref_pb(refs["qa"]), params=params), timeout=60)
    assert reply.HasField("start") and reply.HasField("end") and reply.HasField("score")
    assert reply.generated_text
    assert reply.generated_text in CONTEXT
    assert CONTEXT[reply.start : reply.end] == reply.generated_text


async def test_seq2seq_summarization_streams(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    request = inference_pb2.GenerateStreamRequest(model=ref_pb(refs["seq2seq"]), params=greedy("A long article.", 6))
    chunks = [c async for c in stub.GenerateStream(request)]
    assert chunks[-1].finished
    assert 1 <= chunks[-1].tokens_generated <= 6


async def test_an_altered_adapter_is_failed_precondition(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef], copy_folder: Callable[[Path], Path]
) -> None:
    folder = copy_folder(Path(refs["lora"].path))
    (folder / "adapter_config.json").write_text('{"r": 64}')
    model = ref_pb(dataclasses.replace(refs["lora"], path=str(folder)))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Generate(inference_pb2.GenerateRequest(model=model, params=greedy()), timeout=60)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert exc.value.details() == "model artifact adapter_config.json is altered (sha256 mismatch)"


async def test_a_missing_adapter_file_is_failed_precondition_on_the_stream_too(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef], copy_folder: Callable[[Path], Path]
) -> None:
    folder = copy_folder(Path(refs["lora"].path))
    (folder / "adapter_model.safetensors").unlink()
    model = ref_pb(dataclasses.replace(refs["lora"], path=str(folder)))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _chunk in stub.GenerateStream(inference_pb2.GenerateStreamRequest(model=model, params=greedy())):
            pass
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert exc.value.details() == "model artifact adapter_model.safetensors is missing"


async def test_a_deleted_model_is_not_found(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef], tmp_path: Path
) -> None:
    model = ref_pb(dataclasses.replace(refs["full"], path=str(tmp_path / "deleted")))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Generate(inference_pb2.GenerateRequest(model=model, params=greedy()), timeout=60)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_parameters_are_invalid_argument_with_field_names(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    params = inference_pb2.GenerationParams(prompt="", max_new_tokens=5000, temperature=3.0, top_p=1.5, top_k=-1)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Generate(inference_pb2.GenerateRequest(model=ref_pb(refs["full"]), params=params), timeout=60)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in violations_of(exc.value)]
    assert fields == ["prompt", "max_new_tokens", "temperature", "top_p", "top_k"]


async def test_qa_without_context_is_invalid_argument_on_the_stream(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    request = inference_pb2.GenerateStreamRequest(
        model=ref_pb(refs["qa"]), params=inference_pb2.GenerationParams(question="Who?")
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _chunk in stub.GenerateStream(request):
            pass
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations_of(exc.value)] == ["context"]


async def test_unload_model(stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]) -> None:
    await stub.Generate(inference_pb2.GenerateRequest(model=ref_pb(refs["full"]), params=greedy()), timeout=60)
    first = await stub.UnloadModel(inference_pb2.UnloadModelRequest(model_id="full-model"), timeout=10)
    second = await stub.UnloadModel(inference_pb2.UnloadModelRequest(model_id="full-model"), timeout=10)
    assert (first.unloaded, second.unloaded) == (True, False)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.UnloadModel(inference_pb2.UnloadModelRequest(), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_merge_writes_full_weights_that_generate_like_base_plus_adapter(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef], data_dir: Path
) -> None:
    lora = refs["lora"]
    merged = await stub.MergeAdapter(
        inference_pb2.MergeAdapterRequest(model=ref_pb(lora), output_path="models/merged-1"), timeout=120
    )
    folder = Path(merged.path)
    assert folder == (data_dir / "models" / "merged-1").resolve()
    assert any(name.endswith(".safetensors") for name in merged.file_sha256)
    assert "adapter_config.json" not in merged.file_sha256
    assert merged.size_bytes > 0

    full = dataclasses.replace(
        lora, model_id="merged-1", base_model=str(folder), path=str(folder), adapter_type="full",
        file_sha256=dict(merged.file_sha256),
    )
    with_adapter = await stub.Generate(inference_pb2.GenerateRequest(model=ref_pb(lora), params=greedy()), timeout=60)
    standalone = await stub.Generate(inference_pb2.GenerateRequest(model=ref_pb(full), params=greedy()), timeout=60)
    assert standalone.generated_text == with_adapter.generated_text


async def test_merge_outside_the_data_dir_is_invalid_argument(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef], tmp_path: Path
) -> None:
    request = inference_pb2.MergeAdapterRequest(model=ref_pb(refs["lora"]), output_path=str(tmp_path / "elsewhere"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.MergeAdapter(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations_of(caught.value)] == ["output_path"]


async def test_push_without_a_server_token_is_failed_precondition(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    request = inference_pb2.PushToHubRequest(model=ref_pb(refs["lora"]), repo_name="someone/tiny")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PushToHub(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "MODELFORGE_HF_TOKEN" in (caught.value.details() or "")


async def test_chat_messages_stop_seed_and_totals_over_grpc(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    model = ref_pb(refs["lora"])
    messages = [inference_pb2.ChatMessage(role="system", content="Be brief."),
                inference_pb2.ChatMessage(role="user", content="What is machine learning?")]
    params = inference_pb2.GenerationParams(messages=messages, max_new_tokens=12, temperature=0.0)
    whole = await stub.Generate(inference_pb2.GenerateRequest(model=model, params=params), timeout=60)
    assert whole.prompt_tokens > 10 and whole.finish_reason in ("stop", "length")
    chunks = [c async for c in stub.GenerateStream(inference_pb2.GenerateStreamRequest(model=model, params=params))]
    assert "".join(c.text for c in chunks) == whole.generated_text
    assert (chunks[-1].prompt_tokens, chunks[-1].finish_reason) == (whole.prompt_tokens, whole.finish_reason)
    assert len(whole.generated_text) > 3
    stop = whole.generated_text[2:4]
    params.stop.append(stop)
    stopped = await stub.Generate(inference_pb2.GenerateRequest(model=model, params=params), timeout=60)
    assert stopped.generated_text == whole.generated_text[: whole.generated_text.index(stop)]
    assert stopped.finish_reason == "stop"
    sampled = inference_pb2.GenerationParams(prompt="Hi", max_new_tokens=12, temperature=1.2, seed=5)
    first, second = [
        await stub.Generate(inference_pb2.GenerateRequest(model=model, params=sampled), timeout=60) for _ in range(2)
    ]
    assert first.generated_text == second.generated_text


async def test_a_bad_chat_role_is_invalid_argument_naming_the_message(
    stub: inference_pb2_grpc.InferenceServiceStub, refs: dict[str, ModelRef]
) -> None:
    params = inference_pb2.GenerationParams(messages=[inference_pb2.ChatMessage(role="user", content="Hi"),
                                                      inference_pb2.ChatMessage(role="bot", content="x")])
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Generate(inference_pb2.GenerateRequest(model=ref_pb(refs["full"]), params=params), timeout=60)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in violations_of(exc.value)] == ["messages[1].role"]


@pytest.fixture
async def served(data_dir: Path) -> AsyncIterator[tuple[inference_pb2_grpc.InferenceServiceStub, LocalBackend]]:
    """The stub and the local backend behind it (to see its batch slots)."""
    local = LocalBackend(2, 1 << 30, device="cpu")
    service = InferenceService(local, default_max_new_tokens=16)
    name = service_name(inference_pb2, "InferenceService")
    servicer = InferenceServicer(service, ModelPublisher(data_dir, hf_token=None))
    server, port, _health = build_server(
        [(inference_pb2_grpc.add_InferenceServiceServicer_to_server, servicer, name)], "127.0.0.1:0"
    )
    await server.start()
    channel = make_channel(f"127.0.0.1:{port}", intercepted=False)
    try:
        yield inference_pb2_grpc.InferenceServiceStub(channel), local
    finally:
        await channel.close()
        await server.stop(None)
        await service.close()


def start_action(stream_id: int, model: inference_pb2.ModelRef,
                 params: inference_pb2.GenerationParams) -> inference_pb2.StreamAction:
    request = inference_pb2.GenerateStreamRequest(model=model, params=params)
    return inference_pb2.StreamAction(stream_id=stream_id, start=request, request_id=f"req-{stream_id}")


async def test_streams_over_one_call_give_what_generate_stream_gives_and_errors_as_its_status(
    served: tuple[inference_pb2_grpc.InferenceServiceStub, LocalBackend], refs: dict[str, ModelRef]
) -> None:
    stub, _ = served
    lora, full = ref_pb(refs["lora"]), ref_pb(refs["full"])
    bad = inference_pb2.GenerationParams(prompt="", temperature=3.0)
    alone = {}
    for stream_id, model in ((1, lora), (2, full)):
        request = inference_pb2.GenerateStreamRequest(model=model, params=greedy())
        chunks = [c async for c in stub.GenerateStream(request, timeout=60)]
        alone[stream_id] = ("".join(c.text for c in chunks), chunks[-1].tokens_generated)
    call = stub.GenerateStreams(timeout=120)
    await call.write(inference_pb2.GenerateStreamsRequest(
        actions=[start_action(1, lora, greedy()), start_action(2, full, greedy()), start_action(3, full, bad)]))
    await call.done_writing()
    pieces: dict[int, list[inference_pb2.GenerateStreamResponse]] = {1: [], 2: []}
    errors = {}
    async for message in call:
        for event in message.events:
            if event.WhichOneof("event") == "piece":
                pieces[event.stream_id].append(event.piece)
            else:
                errors[event.stream_id] = status_pb2.Status.FromString(event.error_status)
    # The call ended by itself once the caller stopped writing and every stream was done.
    assert await call.code() == grpc.StatusCode.OK
    # Greedy: the same text whoever shares the batch (pieces may split differently: they are timed).
    assert {sid: ("".join(p.text for p in got), got[-1].tokens_generated) for sid, got in pieces.items()} == alone
    assert all(got[-1].finished and not any(p.finished for p in got[:-1]) for got in pieces.values())
    assert list(errors) == [3] and errors[3].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_request = error_details_pb2.BadRequest()
    assert errors[3].details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["prompt", "temperature"]


async def test_a_cancelled_stream_frees_its_batch_slot_and_the_call_stays_open(
    served: tuple[inference_pb2_grpc.InferenceServiceStub, LocalBackend], refs: dict[str, ModelRef]
) -> None:
    stub, local = served
    model = ref_pb(refs["lora"])
    call = stub.GenerateStreams(timeout=120)
    await call.write(inference_pb2.GenerateStreamsRequest(
        actions=[start_action(1, model, greedy(max_new_tokens=400))]))
    first = await call.read()
    assert first.events[0].stream_id == 1
    host = (await local.served_model(dataclasses.replace(refs["lora"]))).host
    batcher = local.batcher_for(host)
    assert batcher is not None and batcher.active == 1
    await call.write(inference_pb2.GenerateStreamsRequest(
        actions=[inference_pb2.StreamAction(stream_id=1, cancel=inference_pb2.StreamCancel())]))
    for _ in range(500):
        if batcher.active == 0:
            break
        await asyncio.sleep(0.01)
    assert batcher.active == 0
    # The same call serves the next stream to its end.
    await call.write(inference_pb2.GenerateStreamsRequest(actions=[start_action(2, model, greedy(max_new_tokens=4))]))
    await call.done_writing()
    finished = []
    while (message := await call.read()) is not grpc.aio.EOF:
        print(message)
        finished += [event.piece.finished for event in message.events if event.stream_id == 2]
    assert finished and finished[-1] is True
    assert await call.code() == grpc.StatusCode.OK
