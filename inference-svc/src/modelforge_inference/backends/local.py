"""In-process generation with transformers + peft, behind an LRU cache of loaded models.

Blocking work (loading, hashing, generate()) runs in worker threads so the event loop keeps
serving; each model generates one request at a time. torch is imported on first use only.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from modelforge_inference.cache import ModelCache
from modelforge_inference.domain import EXTRACTIVE_QA, GenerationParams, GenerationResult, ModelRef, StreamChunk
from modelforge_inference.streaming import PieceChannel, TokenStreamer

if TYPE_CHECKING:
    from modelforge_inference.backends.hf_models import LoadedModel

T = TypeVar("T")
_HF_MODULE = "modelforge_inference.backends.hf_models"


def _hf() -> Any:
    from modelforge_inference.backends import hf_models

    return hf_models


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def _in_thread(work: Callable[[threading.Event], T]) -> T:
    """Runs `work(cancel)` in a worker thread. If the caller is cancelled, `cancel` is set and the
    thread is awaited before the cancellation goes on, so the model's lock is never released
    while a generation still runs on it."""
    cancel = threading.Event()
    future = asyncio.ensure_future(asyncio.to_thread(work, cancel))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(Exception):
            await future
        raise


class LocalBackend:
    name = "local"

    def __init__(
        self, max_models: int, max_bytes: int, device: str | None = None, stream_interval_s: float = 0.0
    ) -> None:
        self._device = device
        self._stream_interval_s = stream_interval_s
        self._cache: ModelCache[tuple[str, str, str, str], LoadedModel] = ModelCache(
            max_models, max_bytes, size_of=lambda loaded: loaded.nbytes, release=self._release_memory
        )

    @property
    def cache(self) -> ModelCache[tuple[str, str, str, str], LoadedModel]:
        return self._cache

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = _hf().default_device()
        return self._device

    def serves(self, task: str) -> bool:
        return True

    async def _model(self, ref: ModelRef) -> LoadedModel:
        hf = _hf()
        device = self.device
        # Sized from the safetensors headers before loading, so eviction makes room first.
        estimate = 0 if ref.cache_key in self._cache else await asyncio.to_thread(hf.estimate_bytes, ref, device)

        async def load() -> LoadedModel:
            loaded: LoadedModel = await asyncio.to_thread(hf.load_model, ref, device)
            loaded.lock = asyncio.Lock()
            return loaded

        return await self._cache.get(ref.cache_key, load, estimate)

    async def generate(self, ref: ModelRef, params: GenerationParams) -> GenerationResult:
        loaded = await self._model(ref)
        hf = _hf()
        async with loaded.lock:
            started = time.perf_counter()
            if ref.task == EXTRACTIVE_QA:
                answer = await _in_thread(lambda _cancel: hf.answer_question(loaded, params.question, params.context))
                return GenerationResult(
                    generated_text=answer.text,
                    tokens_generated=answer.tokens,
                    generation_time_ms=_elapsed_ms(started),
                    score=answer.score,
                    start=answer.start,
                    end=answer.end,
                )
            text, tokens = await _in_thread(lambda cancel: hf.generate_text(loaded, ref.task, params, None, cancel))
            return GenerationResult(text, tokens, _elapsed_ms(started))

    async def generate_stream(self, ref: ModelRef, params: GenerationParams) -> AsyncIterator[StreamChunk]:
        if ref.task == EXTRACTIVE_QA:
            # An extracted span comes out whole: one piece, then the totals.
            result = await self.generate(ref, params)
            yield StreamChunk(result.generated_text)
            yield StreamChunk("", True, result.tokens_generated, result.generation_time_ms)
            return
        loaded = await self._model(ref)
        hf = _hf()
        pieces = PieceChannel(asyncio.get_running_loop(), self._stream_interval_s)
        decode = loaded.tokenizer.decode
        streamer = TokenStreamer(lambda ids: decode(list(ids), skip_special_tokens=True), pieces.put)
        cancel = threading.Event()
        async with loaded.lock:
            started = time.perf_counter()
            worker = asyncio.ensure_future(
                asyncio.to_thread(hf.generate_text, loaded, ref.task, params, streamer, cancel)
            )
            # Runs on the loop after the thread's last emit, so the end marker follows every piece.
            worker.add_done_callback(lambda _done: pieces.close())
            try:
                while (piece := await pieces.take()) is not None:
                    yield StreamChunk(piece)
                _text, tokens = await worker
            finally:
                if not worker.done():
                    cancel.set()
                    with contextlib.suppress(Exception):
                        await asyncio.shield(worker)
        yield StreamChunk("", finished=True, tokens_generated=tokens, generation_time_ms=_elapsed_ms(started))

    async def unload(self, model_id: str) -> bool:
        return self._cache.drop(lambda key: key[0] == model_id) > 0

    async def close(self) -> None:
        self._cache.clear()

    @staticmethod
    def _release_memory() -> None:
        # Nothing to give back if torch was never loaded.
        if _HF_MODULE in sys.modules:
            sys.modules[_HF_MODULE].release_memory()
