"""The local backend on a CUDA device (run on a GPU machine; skipped elsewhere). Synchronous
tests around asyncio.run, so they run where only torch, transformers and peft are installed."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

from modelforge_inference.backends.local import LocalBackend
from modelforge_inference.domain import GenerationParams, ModelRef

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

GREEDY = GenerationParams(prompt="Tell me about the fox", max_new_tokens=24)


def test_lora_model_generates_and_streams_on_the_gpu(refs: dict[str, ModelRef]) -> None:
    async def scenario() -> None:
        local = LocalBackend(2, 1 << 30)
        assert local.device == "cuda"
        whole = await local.generate(refs["lora"], GREEDY)
        chunks = [chunk async for chunk in local.generate_stream(refs["lora"], GREEDY)]
        assert "".join(chunk.text for chunk in chunks) == whole.generated_text
        assert chunks[-1].tokens_generated == whole.tokens_generated >= 1
        sampled = await local.generate(refs["lora"], dataclasses.replace(GREEDY, temperature=0.8, top_p=0.9, top_k=20))
        assert 1 <= sampled.tokens_generated <= GREEDY.max_new_tokens
        answer = await local.generate(refs["qa"], GenerationParams(context="Ann lives in Oslo.", question="Where?"))
        assert answer.generated_text in "Ann lives in Oslo."
        await local.close()

    asyncio.run(scenario())


def test_models_load_in_half_precision_on_the_gpu_and_unload_frees_memory(refs: dict[str, ModelRef]) -> None:
    async def scenario() -> None:
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        local = LocalBackend(2, 1 << 30)
        await local.generate(refs["full"], GREEDY)
        served = await local.served_model(refs["full"])
        parameter = next(served.host.model.parameters())
        assert parameter.device.type == "cuda"
        assert parameter.dtype in (torch.bfloat16, torch.float16)
        del served, parameter
        assert torch.cuda.memory_allocated() > before
        assert await local.unload("full-model")
        assert torch.cuda.memory_allocated() == before

    asyncio.run(scenario())
