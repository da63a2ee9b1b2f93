"""In-process generation with transformers + peft.

Each base model is loaded once; registered models served from it (LoRA adapters, or the base
itself) attach to that copy, under an LRU by bytes (ServingCache). Decoder-only models decode in
a continuous batch per base (backends/batching.py): concurrent requests of any adapter share
each forward pass. Encoder-decoder models and extractive QA run one request at a time per base.
Blocking work runs in worker threads so the event loop keeps serving; torch is imported on
first use only.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from modelforge_common.errors import Unavailable
from modelforge_inference import heap
from modelforge_inference.domain import EXTRACTIVE_QA, GenerationParams, GenerationResult, ModelRef, StreamChunk
from modelforge_inference.serving_cache import ServingCache
from modelforge_inference.streaming import PieceChannel, call_on_loop

if TYPE_CHECKING:
    from modelforge_inference.backends.batching import ContinuousBatcher
    from modelforge_inference.backends.hf_models import BaseHost, ServedModel, TextGeneration

T = TypeVar("T")
# Inputs up to this many characters are tokenized on the event loop (well under a millisecond).
INLINE_ENCODE_CHARS = 4000
_HF_MODULE = "modelforge_inference.backends.hf_models"
ModelKey = tuple[str, str, str, str]
BaseKey = tuple[str, str, int]


def _hf() -> Any:
    from modelforge_inference.backends import hf_models

    return hf_models


def _batching() -> Any:
    from modelforge_inference.backends import batching

    return batching


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def _in_thread(work: Callable[[threading.Event], T]) -> T:
    """Runs `work(cancel)` in a worker thread. If the caller is cancelled, `cancel` is set and the
    thread is awaited before the cancellation goes on, so nothing keeps running on the model
    after its caller is gone."""
    cancel = threading.Event()
    future = asyncio.ensure_future(asyncio.to_thread(work, cancel))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(Exception):
            await future
        raise


class _Run:
    """One request's way back from the generating thread: text pieces through a PieceChannel,
    the end through a future; both are completed on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream_interval_s: float, streamed: bool) -> None:
        self.loop = loop
        self.pieces = PieceChannel(loop, stream_interval_s) if streamed else None
        self.result: asyncio.Future[TextGeneration] = loop.create_future()
        self.cancel = threading.Event()

    def emit(self, piece: str) -> None:
        if self.pieces is not None:
            self.pieces.put(piece)

    @property
    def due(self) -> Callable[[], bool] | None:
        """Whether the reader wants a piece now (None: nobody reads pieces)."""
        return self.pieces.due if self.pieces is not None else None

    @property
    def emit_to(self) -> Callable[[str], None] | None:
        """Where pieces go (None: nobody reads them, and the text is decoded once at the end)."""
        return self.emit if self.pieces is not None else None

    def done(self, outcome: TextGeneration | BaseException) -> None:
        """Called from the generating thread."""
        call_on_loop(self.loop, self._settle, outcome)

    def _settle(self, outcome: TextGeneration | BaseException) -> None:
        if not self.result.done():
            if isinstance(outcome, BaseException):
                self.result.set_exception(outcome)
            else:
                self.result.set_result(outcome)
        if self.pieces is not None:
            self.pieces.close()


class LocalBackend:
    name = "local"

    def __init__(
        self,
        max_models: int,
        max_bytes: int,
        device: str | None = None,
        stream_interval_s: float = 0.0,
        max_batch: int = 64,
        settle_heap: bool = False,
    ) -> None:
        self._device = device
        # The service settles the heap after each model load (heap.py); tests and benchmarks that
        # build a backend in their own process leave their collector alone.
        self._settle_heap = settle_heap
        self._stream_interval_s = stream_interval_s
        self._max_batch = max_batch
        self._batchers: dict[int, ContinuousBatcher | None] = {}
        self._wakes_scheduled: set[ContinuousBatcher] = set()
        self._cache: ServingCache[ModelKey, BaseKey, ServedModel, BaseHost] = ServingCache(
            max_models,
            max_bytes,
            release_model=self._release_model,
            release_base=self._release_base,
            after_release=self._release_memory,
        )

    @property
    def cache(self) -> ServingCache[ModelKey, BaseKey, ServedModel, BaseHost]:
        return self._cache

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = _hf().default_device()
        return self._device

    def serves(self, task: str) -> bool:
        return True

    async def served_model(self, ref: ModelRef) -> ServedModel:
        """The model ready to generate: its base loaded (once) and its adapter attached."""
        if ref.cache_key in self._cache:
            return await self._cache.get(ref.cache_key, ("", "", 0), _never, _never_attach)
        hf = _hf()
        device = self.device
        plan = await asyncio.to_thread(hf.plan_model, ref, device)

        async def load_base() -> tuple[BaseHost, int]:
            host = await asyncio.to_thread(hf.load_base, ref, plan, device)
            return host, host.nbytes

        async def attach(host: BaseHost) -> tuple[ServedModel, int]:
            served = await asyncio.to_thread(hf.attach_model, host, ref, plan)
            return served, served.nbytes

        served = await self._cache.get(ref.cache_key, plan.base_key, load_base, attach, plan.base_bytes, plan.own_bytes)
        if self._settle_heap:
            # A load leaves torch's, transformers' and the model's objects for good: out of the
            # collector's full passes (a load takes seconds; this, a tenth of one).
            heap.settle()
        return served

    def batcher_for(self, host: BaseHost) -> ContinuousBatcher | None:
        """The host's scheduler, or None when its model cannot be batched (encoder-decoder, or a
        cache that is not a plain DynamicCache)."""
        key = id(host)
        if key not in self._batchers:
            batching = _batching()
            self._batchers[key] = (
                batching.ContinuousBatcher(host, self._max_batch) if batching.supports_batching(host.model) else None
            )
        return self._batchers[key]

    async def _run(self, ref: ModelRef, params: GenerationParams, streamed: bool) -> tuple[_Run, ServedModel, Any]:
        """Starts a text generation; returns its run, its model and the awaitable of its end."""
        served = await self.served_model(ref)
        hf = _hf()
        run = _Run(asyncio.get_running_loop(), self._stream_interval_s, streamed)
        batcher = None if served.is_encoder_decoder else self.batcher_for(served.host)
        _check_attached(served)
        served.active += 1
        if batcher is None:
            worker = asyncio.ensure_future(
                asyncio.to_thread(hf.generate_text, served, ref.task, params, run.emit_to, run.cancel, run.due)
            )
            worker.add_done_callback(lambda done: run._settle(done.exception() or done.result()))
            return run, served, worker
        try:
            if _input_chars(params) <= INLINE_ENCODE_CHARS:
                # A short prompt is tokenized on the loop: a hop to a worker thread would wait for
                # the GIL behind the batch that is decoding (milliseconds per hop on a small model).
                input_ids = hf.encode_request(served, ref.task, params)
            else:
                input_ids = await asyncio.to_thread(hf.encode_request, served, ref.task, params)
        except BaseException:
            self._finished(served)
            raise
        batching = _batching()
        generator = None
        if not params.greedy:
            import torch

            generator = torch.Generator(device=served.host.device)
            if params.seed is not None:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
        decode = hf.decoder(served)
        request = batching.BatchRequest(
            served=served,
            input_ids=input_ids,
            params=params,
            output=_stops().RequestOutput(decode, params.stop, run.emit_to, run.due),
            eos_ids=served.eos_ids,
            done=run.done,
            cancel=run.cancel,
            generator=generator,
        )
        try:
            self._submit(batcher, request)
        except RuntimeError as exc:
            self._finished(served)
            raise Unavailable("the model was unloaded while the request was starting; try again") from exc
        return run, served, None

    def _submit(self, batcher: ContinuousBatcher, request: Any) -> None:
        """Queues the request and wakes the scheduler once the event loop has run what is ready
        now: users who arrive together (their requests are encoded and submitted one after another
        in this loop iteration) are prefilled in one forward pass. Woken at the first submit, the
        scheduler prefilled that request alone while the loop, short of the GIL, encoded the others,
        which then waited for that prefill and a second one: 4x one user's time to first token for
        eight users arriving at once, 2x with one prefill (bench/ANALYSIS.md, Serving)."""
        batcher.submit(request, wake=False)
        if batcher not in self._wakes_scheduled:
            self._wakes_scheduled.add(batcher)
            asyncio.get_running_loop().call_soon(self._wake, batcher)

    def _wake(self, batcher: ContinuousBatcher) -> None:
        self._wakes_scheduled.discard(batcher)
        batcher.wake()

    def _finished(self, served: ServedModel) -> None:
        served.active -= 1
        if served.retired and served.active == 0:
            _hf().detach_model(served)

    async def _end(self, run: _Run, served: ServedModel, worker: Any) -> TextGeneration:
        """Waits for the run's end; if the caller goes away first, its row is dropped (or its
        generate() stopped) and awaited before the cancellation goes on."""
        try:
            return await asyncio.shield(run.result)
        finally:
            if not run.result.done():
                run.cancel.set()
                with contextlib.suppress(BaseException):
                    await run.result
            if worker is not None:
                with contextlib.suppress(BaseException):
                    await worker
            self._finished(served)

    async def generate(self, ref: ModelRef, params: GenerationParams) -> GenerationResult:
        started = time.perf_counter()
        if ref.task == EXTRACTIVE_QA:
            served = await self.served_model(ref)
            hf = _hf()
            _check_attached(served)
            served.active += 1
            try:
                answer = await _in_thread(lambda _cancel: hf.answer_question(served, params.question, params.context))
            finally:
                self._finished(served)
            return GenerationResult(
                generated_text=answer.text,
                tokens_generated=answer.tokens,
                generation_time_ms=_elapsed_ms(started),
                score=answer.score,
                start=answer.start,
                end=answer.end,
            )
        run, served, worker = await self._run(ref, params, streamed=False)
        result = await self._end(run, served, worker)
        return GenerationResult(
            result.text, result.tokens, _elapsed_ms(started),
            prompt_tokens=result.prompt_tokens, finish_reason=result.finish_reason,
        )

    async def generate_stream(self, ref: ModelRef, params: GenerationParams) -> AsyncIterator[StreamChunk]:
        if ref.task == EXTRACTIVE_QA:
            # An extracted span comes out whole: one piece, then the totals.
            whole = await self.generate(ref, params)
            yield StreamChunk(whole.generated_text)
            yield StreamChunk("", True, whole.tokens_generated, whole.generation_time_ms,
                              whole.prompt_tokens, whole.finish_reason)
            return
        started = time.perf_counter()
        run, served, worker = await self._run(ref, params, streamed=True)
        assert run.pieces is not None
        ending = asyncio.ensure_future(self._end(run, served, worker))
        try:
            while (piece := await run.pieces.take()) is not None:
                yield StreamChunk(piece)
            result = await ending
        finally:
            if not ending.done():
                run.cancel.set()
                ending.cancel()
                with contextlib.suppress(BaseException):
                    await ending
        yield StreamChunk("", finished=True, tokens_generated=result.tokens,
                          generation_time_ms=_elapsed_ms(started), prompt_tokens=result.prompt_tokens,
                          finish_reason=result.finish_reason)

    async def unload(self, model_id: str) -> bool:
        return self._cache.drop(lambda key: key[0] == model_id) > 0

    async def close(self) -> None:
        self._cache.clear()
        for batcher in list(self._batchers.values()):
            if batcher is not None:
                await asyncio.to_thread(batcher.close)
        self._batchers.clear()

    def _release_model(self, served: ServedModel) -> None:
        # An adapter still generating leaves its base when its last request ends.
        if served.active > 0:
            served.retired = True
        else:
            _hf().detach_model(served)

    def _release_base(self, host: BaseHost) -> None:
        batcher = self._batchers.pop(id(host), None)
        if batcher is not None:
            # Its thread finishes the step it is in, then ends every request still in it.
            threading.Thread(target=batcher.close, daemon=True).start()

    @staticmethod
    def _release_memory() -> None:
        # Nothing to give back if torch was never loaded.
        if _HF_MODULE in sys.modules:
            sys.modules[_HF_MODULE].release_memory()


def _check_attached(served: ServedModel) -> None:
    """A model dropped while it was loading comes back detached; it must not reach a batch."""
    if served.adapter is not None and served.adapter not in served.host.adapters:
        raise Unavailable("the model was unloaded while the request was starting; try again")


def _input_chars(params: GenerationParams) -> int:
    return len(params.prompt) + sum(len(m.content) for m in params.messages)


def _stops() -> Any:
    from modelforge_inference import stops

    return stops


async def _never() -> Any:
    raise AssertionError("the model is cached")


async def _never_attach(_base: Any) -> Any:
    raise AssertionError("the model is cached")
