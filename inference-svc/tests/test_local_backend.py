"""The local transformers + peft backend on tiny models, without gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from modelforge_common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from modelforge_inference.backends.local import LocalBackend
from modelforge_inference.domain import GenerationParams, ModelRef, StreamChunk

GREEDY = GenerationParams(prompt="Tell me about the fox", max_new_tokens=16)
CONTEXT = "The quick brown fox jumps over the lazy dog near the river bank in Paris every morning."


def backend(max_models: int = 2, max_bytes: int = 1 << 30) -> LocalBackend:
    return LocalBackend(max_models, max_bytes, device="cpu")


async def collect(chunks: object) -> list[StreamChunk]:
    return [chunk async for chunk in chunks]  # type: ignore[attr-defined]


async def test_lora_adapter_is_applied_on_top_of_the_base(refs: dict[str, ModelRef]) -> None:
    local = backend()
    with_adapter = await local.generate(refs["lora"], GREEDY)
    base_only = await local.generate(refs["full"], GREEDY)
    assert with_adapter.tokens_generated >= 1
    assert with_adapter.generation_time_ms >= 0
    # Same base weights and prompt; only the (random, non-zero) LoRA update differs.
    assert with_adapter.generated_text != base_only.generated_text


async def test_greedy_generation_is_repeatable_and_excludes_the_prompt(refs: dict[str, ModelRef]) -> None:
    local = backend()
    first = await local.generate(refs["full"], GREEDY)
    second = await local.generate(refs["full"], GREEDY)
    assert first == dataclasses.replace(second, generation_time_ms=first.generation_time_ms)
    assert "Tell me about the fox" not in first.generated_text
    assert 1 <= first.tokens_generated <= GREEDY.max_new_tokens


async def test_sampling_runs_with_temperature_top_p_and_top_k(refs: dict[str, ModelRef]) -> None:
    params = dataclasses.replace(GREEDY, temperature=0.9, top_p=0.8, top_k=20, repetition_penalty=1.1)
    result = await backend().generate(refs["lora"], params)
    assert 1 <= result.tokens_generated <= params.max_new_tokens


async def test_stream_joins_to_the_greedy_text(refs: dict[str, ModelRef]) -> None:
    local = backend()
    whole = await local.generate(refs["lora"], GREEDY)
    chunks = await collect(local.generate_stream(refs["lora"], GREEDY))
    assert chunks[-1].finished
    assert chunks[-1].tokens_generated == whole.tokens_generated
    assert not any(chunk.finished for chunk in chunks[:-1])
    assert len(chunks) > 2
    assert "".join(chunk.text for chunk in chunks) == whole.generated_text


async def test_seq2seq_summarization(refs: dict[str, ModelRef]) -> None:
    local = backend()
    params = GenerationParams(prompt="A long article about foxes and dogs.", max_new_tokens=8)
    result = await local.generate(refs["seq2seq"], params)
    chunks = await collect(local.generate_stream(refs["seq2seq"], params))
    assert 1 <= result.tokens_generated <= 8
    assert "".join(chunk.text for chunk in chunks) == result.generated_text
    assert chunks[-1].tokens_generated == result.tokens_generated


async def test_causal_summarization(refs: dict[str, ModelRef]) -> None:
    result = await backend().generate(refs["causal-summary"], GenerationParams(prompt="A long text.", max_new_tokens=8))
    assert 1 <= result.tokens_generated <= 8


async def test_extractive_qa_returns_a_span_of_the_context(refs: dict[str, ModelRef]) -> None:
    params = GenerationParams(context=CONTEXT, question="Where does the fox jump?")
    result = await backend().generate(refs["qa"], params)
    assert result.start is not None and result.end is not None and result.score is not None
    assert 0 <= result.start < result.end <= len(CONTEXT)
    assert result.generated_text == CONTEXT[result.start : result.end]
    assert result.generated_text == result.generated_text.strip()
    assert 0.0 < result.score <= 1.0


async def test_extractive_qa_over_a_context_longer_than_the_model_window(refs: dict[str, ModelRef]) -> None:
    context = " ".join(f"Sentence {i} tells that {CONTEXT}" for i in range(60))
    result = await backend().generate(refs["qa"], GenerationParams(context=context, question="Who jumps?"))
    assert result.start is not None and result.end is not None
    assert result.generated_text == context[result.start : result.end]


async def test_lora_adapter_for_extractive_qa(
    qa_model: Path, tmp_path: Path, make_lora: Callable[..., Path], sha_map: Callable[[Path], dict[str, str]]
) -> None:
    adapter = make_lora(qa_model, tmp_path / "qa-lora", "QUESTION_ANS")
    ref = ModelRef("qa-lora", str(qa_model), str(adapter), "extractive-question-answering", "lora", sha_map(adapter))
    result = await backend().generate(ref, GenerationParams(context=CONTEXT, question="Who jumps?"))
    assert result.start is not None and result.end is not None
    assert result.generated_text == CONTEXT[result.start : result.end]


async def test_concurrent_requests_load_the_model_once(refs: dict[str, ModelRef]) -> None:
    local = backend()
    results = await asyncio.gather(*(local.generate(refs["lora"], GREEDY) for _ in range(3)))
    assert local.cache.loads == 1
    assert len({r.generated_text for r in results}) == 1


async def test_cache_keeps_at_most_max_models(refs: dict[str, ModelRef]) -> None:
    local = backend(max_models=1)
    await local.generate(refs["full"], GREEDY)
    await local.generate(refs["lora"], GREEDY)
    assert [key[0] for key in local.cache.loaded_keys()] == ["lora-model"]
    assert local.cache.total_bytes > 0


async def test_a_model_over_the_byte_budget_is_refused(refs: dict[str, ModelRef]) -> None:
    with pytest.raises(ResourceExhausted):
        await backend(max_bytes=1000).generate(refs["full"], GREEDY)


async def test_unload_drops_the_model(refs: dict[str, ModelRef]) -> None:
    local = backend()
    await local.generate(refs["lora"], GREEDY)
    assert await local.unload("lora-model")
    assert local.cache.loaded_keys() == []
    assert not await local.unload("lora-model")


async def test_an_altered_adapter_is_refused(
    refs: dict[str, ModelRef], copy_folder: Callable[[Path], Path]
) -> None:
    folder = copy_folder(Path(refs["lora"].path))
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x3f")
    ref = dataclasses.replace(refs["lora"], path=str(folder))
    with pytest.raises(FailedPrecondition, match=r"adapter_model.safetensors is altered \(sha256 mismatch\)"):
        await backend().generate(ref, GREEDY)


async def test_a_deleted_model_folder_is_not_found(refs: dict[str, ModelRef], tmp_path: Path) -> None:
    ref = dataclasses.replace(refs["lora"], path=str(tmp_path / "deleted"))
    with pytest.raises(NotFound):
        await backend().generate(ref, GREEDY)


async def test_a_missing_base_model_is_not_found(refs: dict[str, ModelRef], tmp_path: Path) -> None:
    ref = dataclasses.replace(refs["lora"], base_model=str(tmp_path / "no-base"))
    with pytest.raises(NotFound, match="no-base"):
        await backend().generate(ref, GREEDY)


async def test_prompt_and_max_new_tokens_must_fit_the_context(refs: dict[str, ModelRef]) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await backend().generate(refs["full"], dataclasses.replace(GREEDY, max_new_tokens=4096))
    assert [v.field for v in exc.value.violations] == ["max_new_tokens"]


async def test_a_cancelled_generation_stops_after_the_current_token(refs: dict[str, ModelRef]) -> None:
    # Encoder-decoder models run one request at a time through generate(); a set cancel flag stops it.
    from modelforge_inference.backends import hf_models

    served = await backend().served_model(refs["seq2seq"])
    cancel = threading.Event()
    cancel.set()
    result = hf_models.generate_text(served, refs["seq2seq"].task, GREEDY, None, cancel)
    assert result.tokens == 1


async def test_a_stream_closed_early_stops_its_generation_and_frees_the_model(refs: dict[str, ModelRef]) -> None:
    local = backend()
    stream = local.generate_stream(refs["full"], dataclasses.replace(GREEDY, max_new_tokens=400))
    first = await anext(stream)
    assert not first.finished
    await stream.aclose()
    served = await local.served_model(refs["full"])
    batcher = local.batcher_for(served.host)
    assert batcher is not None and batcher.active == 0
    assert served.active == 0
    assert (await local.generate(refs["full"], GREEDY)).tokens_generated >= 1


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_token_ids_are_what_the_tokenizer_call_gives(causal_model: Path, add_special_tokens: bool) -> None:
    from transformers import AutoTokenizer

    from modelforge_inference.backends.hf_models import token_ids

    tokenizer = AutoTokenizer.from_pretrained(causal_model)
    special = f"{tokenizer.eos_token} between {tokenizer.eos_token}"
    for text in ("Héllo wörld, 日本語 and ünïcödé!", special, "", "  spaces  and\nlines\t"):
        expected = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        assert token_ids(tokenizer, text, add_special_tokens) == expected, text
    # A backend left truncating (or splitting special tokens) takes the tokenizer's own call, which
    # resets it: the ids are never cut.
    text = "a long prompt " * 20
    whole = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    tokenizer.backend_tokenizer.enable_truncation(max_length=4)
    assert token_ids(tokenizer, text, add_special_tokens) == whole and len(whole) > 4
    tokenizer.split_special_tokens = True
    split = tokenizer(special, add_special_tokens=add_special_tokens)["input_ids"]
    assert token_ids(tokenizer, special, add_special_tokens) == split
    assert tokenizer.eos_token_id not in split
