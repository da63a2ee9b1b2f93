"""Serving many users from one base: shared base copies, continuous batching, chat and stops."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelforge_common.errors import InvalidArgument
from modelforge_inference.backends.local import LocalBackend
from modelforge_inference.domain import TEXT_GENERATION, ChatMessage, GenerationParams, ModelRef, RequestedParams
from modelforge_inference.service import InferenceService

GREEDY = GenerationParams(prompt="Tell me about the fox", max_new_tokens=12)
PROMPTS = ["Tell me about the fox", "Hi", "A much longer prompt about rivers, bridges and the sea at night", "Why?"]


def backend(max_models: int = 8, max_bytes: int = 1 << 30) -> LocalBackend:
    return LocalBackend(max_models, max_bytes, device="cpu")


@pytest.fixture(scope="session")
def second_adapter(tmp_path_factory: pytest.TempPathFactory, causal_model: Path,
                   make_lora: Callable[..., Path]) -> Path:
    return make_lora(causal_model, tmp_path_factory.mktemp("lora2") / "adapter")


@pytest.fixture
def adapter_refs(refs: dict[str, ModelRef], second_adapter: Path,
                 sha_map: Callable[[Path], dict[str, str]]) -> list[ModelRef]:
    """Base alone, adapter one, adapter two: three models of one base."""
    other = ModelRef("lora-two", refs["lora"].base_model, str(second_adapter), TEXT_GENERATION, "lora",
                     sha_map(second_adapter))
    return [refs["full"], refs["lora"], other]


def _base_weight(served: object) -> object:
    host = served.host  # type: ignore[attr-defined]
    return host.model.get_input_embeddings().weight


async def test_two_adapters_of_one_base_share_one_copy(adapter_refs: list[ModelRef]) -> None:
    local = backend()
    base, one, two = adapter_refs
    served_one = await local.served_model(one)
    served_two = await local.served_model(two)
    served_base = await local.served_model(base)
    cache = local.cache
    assert cache.base_loads == 1 and len(cache.base_keys()) == 1
    assert cache.loads == 3
    [base_key] = cache.base_keys()
    base_bytes = cache.bytes_of_base(base_key)
    own = [cache.bytes_of_model(ref.cache_key) for ref in (base, one, two)]
    assert own[0] == 0 and own[1] > 0 and own[2] > 0
    # The adapters' own weights are a small part of the base's.
    assert own[1] < base_bytes / 4
    assert cache.total_bytes == base_bytes + sum(own)
    # Same tensors, same storage: one copy of the base.
    assert _base_weight(served_one).data_ptr() == _base_weight(served_two).data_ptr()
    assert _base_weight(served_one).data_ptr() == _base_weight(served_base).data_ptr()
    # Each still generates its own text.
    texts = [(await local.generate(ref, GREEDY)).generated_text for ref in adapter_refs]
    assert len(set(texts)) == 3
    await local.close()


async def test_an_evicted_adapter_leaves_its_base_and_the_last_model_takes_the_base(
    adapter_refs: list[ModelRef],
) -> None:
    local = backend(max_models=2)
    base, one, two = adapter_refs
    alone = (await backend().generate(two, GREEDY)).generated_text
    await local.generate(one, GREEDY)
    await local.generate(base, GREEDY)
    await local.generate(two, GREEDY)  # evicts `one`, the least recently used
    assert local.cache.loaded_keys() == [base.cache_key, two.cache_key]
    host = (await local.served_model(two)).host
    assert len(host.adapters) == 1
    assert (await local.generate(two, GREEDY)).generated_text == alone
    assert await local.unload(base.model_id) and await local.unload(two.model_id)
    assert local.cache.base_keys() == [] and local.cache.total_bytes == 0
    await local.close()


async def test_a_mixed_adapter_batch_gives_each_request_its_tokens_alone(adapter_refs: list[ModelRef]) -> None:
    requests = [
        (ref, dataclasses.replace(GREEDY, prompt=prompt, max_new_tokens=8 + 3 * i))
        for i, (ref, prompt) in enumerate(zip(adapter_refs * 2, PROMPTS * 2, strict=False))
    ]
    alone = []
    for ref, params in requests:
        solo = backend()
        alone.append(await solo.generate(ref, params))
        await solo.close()
    shared = backend()
    together = await asyncio.gather(*(shared.generate(ref, params) for ref, params in requests))
    served = await shared.served_model(adapter_refs[0])
    batcher = shared.batcher_for(served.host)
    assert batcher is not None and batcher.largest_batch > 1
    assert [r.generated_text for r in together] == [r.generated_text for r in alone]
    assert [r.tokens_generated for r in together] == [r.tokens_generated for r in alone]
    assert [r.finish_reason for r in together] == [r.finish_reason for r in alone]
    await shared.close()


async def test_rows_without_padding_decode_without_a_mask_and_match_alone(adapter_refs: list[ModelRef]) -> None:
    # Same prompt, so the same length: the batch has no padding and the model is given no mask.
    params = dataclasses.replace(GREEDY, max_new_tokens=10)
    alone = []
    for ref in adapter_refs:
        solo = backend()
        alone.append(await solo.generate(ref, params))
        await solo.close()
    shared = backend()
    for ref in adapter_refs:
        await shared.served_model(ref)
    served = await shared.served_model(adapter_refs[0])
    batcher = shared.batcher_for(served.host)
    assert batcher is not None
    masks: list[bool] = []
    forward = batcher._forward

    def recording_forward(*args: object) -> object:
        masks.append(args[1] is not None)
        return forward(*args)  # type: ignore[arg-type]

    batcher._forward = recording_forward  # type: ignore[method-assign]
    together = await asyncio.gather(*(shared.generate(ref, params) for ref in adapter_refs))
    assert [r.generated_text for r in together] == [r.generated_text for r in alone]
    assert batcher.largest_batch == len(adapter_refs) and masks and not any(masks)
    await shared.close()


def test_the_batchers_sdpa_mask_is_the_one_transformers_builds(causal_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache
    from transformers.masking_utils import create_causal_mask

    from modelforge_inference.backends.batching import sdpa_mask

    model = AutoModelForCausalLM.from_pretrained(causal_model, attn_implementation="sdpa")
    config = model.config
    # Three rows left-padded to 5 tokens (one without padding), as a prefill leaves them.
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=config)
    embeds = torch.zeros((3, 5, config.hidden_size))
    theirs = create_causal_mask(config=config, inputs_embeds=embeds, attention_mask=mask, cache=cache,
                                position_ids=positions)
    assert theirs is not None and torch.equal(sdpa_mask(mask, 5), theirs)
    with torch.inference_mode():
        model(input_ids=torch.ones((3, 5), dtype=torch.long), attention_mask=mask, position_ids=positions,
              cache=cache, use_cache=True)
    # A decoding step: one new position per row after the five in the cache.
    step = torch.cat([mask, torch.ones((3, 1), dtype=torch.long)], dim=1)
    theirs = create_causal_mask(config=config, inputs_embeds=embeds[:, :1], attention_mask=step,
                                cache=cache, position_ids=positions[:, -1:] + 1)
    assert theirs is not None and torch.equal(sdpa_mask(step, 1), theirs)


async def test_a_padded_batch_is_given_the_batchers_own_sdpa_mask(adapter_refs: list[ModelRef]) -> None:
    local = backend()
    served = await local.served_model(adapter_refs[1])
    batcher = local.batcher_for(served.host)
    assert batcher is not None and batcher._sdpa_mask
    masks: list[tuple[int, ...]] = []
    model_call = served.host.model.forward

    def recording_call(*args: object, **kwargs: object) -> object:
        mask = kwargs.get("attention_mask")
        masks.append(tuple(mask.shape) if mask is not None else ())  # type: ignore[attr-defined]
        return model_call(*args, **kwargs)

    served.host.model.forward = recording_call
    params = [dataclasses.replace(GREEDY, prompt=prompt, max_new_tokens=3) for prompt in PROMPTS[:2]]
    await asyncio.gather(*(local.generate(adapter_refs[1], p) for p in params))
    del served.host.model.forward
    # The prefill of both rows and their decoding steps, all padded: 4-D masks.
    assert masks and all(len(shape) == 4 for shape in masks), masks
    await local.close()


async def test_a_request_queued_before_the_scheduler_woke_ends_when_it_closes(refs: dict[str, ModelRef]) -> None:
    from modelforge_inference.backends.batching import Abandoned, BatchRequest, ContinuousBatcher
    from modelforge_inference.stops import RequestOutput

    local = backend()
    served = await local.served_model(refs["lora"])
    batcher = ContinuousBatcher(served.host)
    outcomes: list[object] = []
    request = BatchRequest(served, [1, 2, 3], GREEDY, RequestOutput(lambda ids: ""), frozenset(), outcomes.append)
    batcher.submit(request, wake=False)
    assert batcher.active == 1
    batcher.close()  # before the wake: no thread ever took it
    assert len(outcomes) == 1 and isinstance(outcomes[0], Abandoned) and batcher.active == 0
    batcher.wake()
    with pytest.raises(RuntimeError):
        batcher.submit(request)
    await local.close()


async def test_a_request_joining_a_running_batch_streams_correctly(adapter_refs: list[ModelRef]) -> None:
    _base, one, two = adapter_refs
    late_params = dataclasses.replace(GREEDY, prompt="Hi", max_new_tokens=10)
    solo = backend()
    expected = await solo.generate(two, late_params)
    await solo.close()
    local = backend()
    # Both attached first: attaching the second adapter after the first request started could outlast
    # that request's 200 tokens on a loaded machine, and there would be no batch left to join.
    await local.served_model(two)
    running = local.generate_stream(one, dataclasses.replace(GREEDY, max_new_tokens=200))
    await anext(running)  # the first request is decoding
    served = await local.served_model(one)
    batcher = local.batcher_for(served.host)
    assert batcher is not None
    steps_before = batcher.steps
    chunks = [chunk async for chunk in local.generate_stream(two, late_params)]
    assert batcher.steps > steps_before and batcher.largest_batch == 2
    assert "".join(c.text for c in chunks) == expected.generated_text
    assert chunks[-1].finished and chunks[-1].tokens_generated == expected.tokens_generated
    assert chunks[-1].prompt_tokens == expected.prompt_tokens and chunks[-1].finish_reason == "length"
    await running.aclose()
    await local.close()


async def test_users_arriving_together_are_prefilled_in_one_forward_pass(adapter_refs: list[ModelRef]) -> None:
    local = backend()
    for ref in adapter_refs:  # loaded and attached beforehand: nothing to await before each submit
        await local.served_model(ref)
    await local.generate(adapter_refs[0], dataclasses.replace(GREEDY, max_new_tokens=2))  # starts the thread
    served = await local.served_model(adapter_refs[0])
    batcher = local.batcher_for(served.host)
    assert batcher is not None
    # The scheduler thread is back to waiting for work (a thread's state: no event to await).
    while not batcher.idle:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    prefills = batcher.prefills
    submitted_with_wake: list[bool] = []
    queued_at_wake: list[int] = []
    submit, wake = batcher.submit, batcher.wake

    def recording_submit(request: object, wake: bool = True) -> None:
        submitted_with_wake.append(wake)
        submit(request, wake)  # type: ignore[arg-type]

    def recording_wake() -> None:
        queued_at_wake.append(batcher.active)
        wake()

    batcher.submit, batcher.wake = recording_submit, recording_wake  # type: ignore[method-assign]
    params = [dataclasses.replace(GREEDY, prompt=prompt, max_new_tokens=4) for prompt in PROMPTS]
    together = await asyncio.gather(*(local.generate(adapter_refs[i % 3], p) for i, p in enumerate(params)))
    # All four were queued in one event-loop iteration; the scheduler was woken once, after the last.
    assert submitted_with_wake == [False] * len(PROMPTS) and queued_at_wake == [len(PROMPTS)]
    assert batcher.prefills == prefills + 1 and batcher.largest_batch == len(PROMPTS)
    alone = backend()
    expected = [await alone.generate(adapter_refs[i % 3], p) for i, p in enumerate(params)]
    assert [r.generated_text for r in together] == [r.generated_text for r in expected]
    await alone.close()
    await local.close()


async def test_a_disconnect_frees_its_slot_while_others_continue(adapter_refs: list[ModelRef]) -> None:
    base, one, _ = adapter_refs
    local = backend()
    leaving = local.generate_stream(base, dataclasses.replace(GREEDY, max_new_tokens=400))
    staying = asyncio.ensure_future(local.generate(one, dataclasses.replace(GREEDY, max_new_tokens=60)))
    await anext(leaving)
    served = await local.served_model(base)
    batcher = local.batcher_for(served.host)
    assert batcher is not None
    await leaving.aclose()
    # The leaver's row is gone as soon as aclose returns; the other request still runs to its end.
    assert batcher.active <= 1 and served.active == 0
    result = await staying
    assert result.tokens_generated == 60 and result.finish_reason == "length"
    assert batcher.active == 0
    await local.close()


async def test_greedy_and_seeded_sampled_requests_share_a_batch(refs: dict[str, ModelRef]) -> None:
    sampled = dataclasses.replace(GREEDY, temperature=1.3, top_p=0.95, top_k=40, seed=7, max_new_tokens=16)
    local = backend()
    greedy_alone = await local.generate(refs["lora"], GREEDY)
    sampled_alone = await local.generate(refs["lora"], sampled)
    mixed = await asyncio.gather(local.generate(refs["lora"], GREEDY), local.generate(refs["lora"], sampled),
                                 local.generate(refs["lora"], dataclasses.replace(sampled, seed=8)))
    assert mixed[0].generated_text == greedy_alone.generated_text
    # The same seed gives the same tokens whoever shares the batch.
    assert mixed[1].generated_text == sampled_alone.generated_text
    assert mixed[2].generated_text != mixed[1].generated_text
    await local.close()


async def test_stop_strings_end_generation_and_are_not_returned(refs: dict[str, ModelRef]) -> None:
    local = backend()
    free = await local.generate(refs["full"], dataclasses.replace(GREEDY, max_new_tokens=30))
    assert len(free.generated_text) > 6
    stop = free.generated_text[4:7]
    cut = free.generated_text[: free.generated_text.index(stop)]
    params = dataclasses.replace(GREEDY, max_new_tokens=30, stop=(stop, "never-generated"))
    whole = await local.generate(refs["full"], params)
    assert whole.generated_text == cut
    assert whole.finish_reason == "stop" and whole.tokens_generated < free.tokens_generated
    chunks = [c async for c in local.generate_stream(refs["full"], params)]
    assert "".join(c.text for c in chunks) == cut and chunks[-1].finish_reason == "stop"
    await local.close()


async def test_chat_history_reaches_the_template(refs: dict[str, ModelRef]) -> None:
    from modelforge_inference.backends import hf_models

    local = backend()
    served = await local.served_model(refs["full"])
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"),
                ChatMessage("assistant", "Hello there"), ChatMessage("user", "Tell me about the fox"))
    params = GenerationParams(messages=messages, max_new_tokens=8)
    ids = hf_models.encode_request(served, TEXT_GENERATION, params)
    rendered = served.tokenizer.decode(ids)
    expected = served.tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], tokenize=False, add_generation_prompt=True
    )
    assert rendered == expected
    for message in messages:
        assert message.content in rendered
    result = await local.generate(refs["full"], params)
    assert result.prompt_tokens == len(ids) and result.tokens_generated >= 1
    await local.close()


async def test_messages_with_a_bad_role_name_the_message_index(refs: dict[str, ModelRef]) -> None:
    service = InferenceService(backend())
    requested = RequestedParams(messages=(ChatMessage("user", "Hi"), ChatMessage("wizard", "x"),
                                          ChatMessage("", "y")))
    with pytest.raises(InvalidArgument) as exc:
        await service.generate(refs["full"], requested)
    assert [v.field for v in exc.value.violations] == ["messages[1].role", "messages[2].role"]


async def test_batched_lora_matches_peft_and_holds_the_weights_once(adapter_refs: list[ModelRef]) -> None:
    import torch

    from modelforge_inference.backends.hf_models import BASE_ADAPTER

    local = backend()
    _base, one, two = adapter_refs
    served_one, served_two = await local.served_model(one), await local.served_model(two)
    host = served_one.host
    assert host.batched_lora is not None
    names = [served_one.adapter_name, BASE_ADAPTER, served_two.adapter_name, served_one.adapter_name]
    ids = torch.tensor([[5, 9, 13, 17, 21]] * len(names))
    with torch.inference_mode():
        with host.batched_lora.rows(names, BASE_ADAPTER):
            ours = host.model(input_ids=ids).logits
        host.batched_lora.release()  # peft's own mixed-batch path
        theirs = host.model(input_ids=ids, adapter_names=names).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours[0], ours[1]) and not torch.allclose(ours[0], ours[2])
    await local.close()


def test_adapter_weights_become_views_into_the_stacks(causal_model: Path, lora_adapter: Path,
                                                     second_adapter: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from modelforge_inference.backends.lora_batch import BatchedLora, supports

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(causal_model), str(lora_adapter),
                                      adapter_name="a")
    model.load_adapter(str(second_adapter), adapter_name="b")
    assert supports(model, ["a", "b"])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    batched = BatchedLora(model)
    batched.rebuild(["a", "b"])
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            assert torch.equal(parameter, before[name])
            assert parameter.untyped_storage().data_ptr() in {
                stack.a.untyped_storage().data_ptr() for stack in batched._stacks.values()
            } | {stack.b.untyped_storage().data_ptr() for stack in batched._stacks.values()}


async def test_an_adapter_evicted_while_generating_finishes_its_request_then_leaves(
    adapter_refs: list[ModelRef],
) -> None:
    _base, one, two = adapter_refs
    # Long enough to be decoding still when `two` has loaded, even on a loaded machine (the batch
    # decodes whether or not the stream is read: 40 tokens once ended first, and the adapter left).
    params = dataclasses.replace(GREEDY, max_new_tokens=400)
    solo = backend()
    expected = await solo.generate(one, params)
    assert expected.finish_reason == "length"
    await solo.close()
    local = backend(max_models=1)
    running = local.generate_stream(one, params)
    pieces = [(await anext(running)).text]
    served_one = await local.served_model(one)
    await local.generate(two, GREEDY)  # evicts `one` while it still streams
    assert local.cache.loaded_keys() == [two.cache_key]
    assert served_one.retired and served_one.adapter in served_one.host.adapters
    pieces += [chunk.text async for chunk in running]
    assert "".join(pieces) == expected.generated_text
    assert served_one.adapter not in served_one.host.adapters
    await local.close()


async def test_per_request_sampling_settings_hold_inside_a_shared_batch(refs: dict[str, ModelRef]) -> None:
    local = backend()
    greedy = dataclasses.replace(GREEDY, max_new_tokens=16)
    penalized = dataclasses.replace(greedy, repetition_penalty=1.8)
    penalized_alone = await local.generate(refs["lora"], penalized)
    greedy_alone = await local.generate(refs["lora"], greedy)
    # top_k 1 and a tiny top_p leave one candidate: sampling at any temperature is then greedy.
    top_k_one = dataclasses.replace(greedy, temperature=1.9, top_k=1, seed=3)
    tiny_top_p = dataclasses.replace(greedy, temperature=1.9, top_p=1e-6, seed=4)
    wild = dataclasses.replace(greedy, temperature=1.9, seed=5, max_new_tokens=30)
    results = await asyncio.gather(*(local.generate(refs["lora"], p)
                                     for p in (penalized, greedy, top_k_one, tiny_top_p, wild)))
    assert results[0].generated_text == penalized_alone.generated_text
    assert results[1].generated_text == greedy_alone.generated_text
    assert results[2].generated_text == results[3].generated_text == greedy_alone.generated_text
    assert penalized_alone.generated_text != greedy_alone.generated_text
    assert results[4].generated_text != greedy_alone.generated_text
    assert results[4].tokens_generated <= 30 and results[0].tokens_generated <= 16
    await local.close()


async def test_requests_arriving_during_a_prefill_are_prefilled_before_the_next_step(
    adapter_refs: list[ModelRef],
) -> None:
    local = backend()
    for ref in adapter_refs:
        await local.served_model(ref)
    await local.generate(adapter_refs[0], dataclasses.replace(GREEDY, max_new_tokens=2))  # starts the thread
    batcher = local.batcher_for((await local.served_model(adapter_refs[0])).host)
    assert batcher is not None
    loop = asyncio.get_running_loop()
    passes: list[str] = []
    second_queued = threading.Event()
    start, step = batcher._start, batcher._step

    def recording_start(joiners: list[Any]) -> list[Any]:
        if joiners:
            passes.append(f"prefill {len(joiners)}")
        if len(passes) == 1:
            # The second user arrives while the first one's prefill runs.
            loop.call_soon_threadsafe(second_arrives.set)
            assert second_queued.wait(10)
        return start(joiners)

    def recording_step() -> None:
        passes.append(f"step {batcher.active}")
        step()

    batcher._start, batcher._step = recording_start, recording_step  # type: ignore[method-assign]
    second_arrives = asyncio.Event()
    params = [dataclasses.replace(GREEDY, prompt=prompt, max_new_tokens=3) for prompt in PROMPTS[:2]]
    first = asyncio.ensure_future(local.generate(adapter_refs[1], params[0]))
    await second_arrives.wait()
    second = asyncio.ensure_future(local.generate(adapter_refs[2], params[1]))
    # Queued (the first, inside its prefill, is neither queued nor a row yet).
    while batcher.active < 1:  # noqa: ASYNC110 - a thread's queue: no event to await
        await asyncio.sleep(0.001)
    second_queued.set()
    together = [await first, await second]
    # The newcomer's prefill came before the first request's next step; then they decoded together.
    assert passes[:3] == ["prefill 1", "prefill 1", "step 2"]
    alone = backend()
    expected = [await alone.generate(adapter_refs[1 + i], p) for i, p in enumerate(params)]
    assert [r.generated_text for r in together] == [r.generated_text for r in expected]
    await alone.close()
    await local.close()
