"""Continuous batching for decoder-only models: one scheduler thread per base host runs one
forward pass per step over every active sequence, whatever adapter each uses.

Sequences are left-padded into one batch with one KV cache (transformers' DynamicCache): an
attention mask hides the padding and each row gets its own position ids, so a row computes what
it would alone. Requests that arrive while a batch runs are prefilled together (one forward over
the newcomers), their caches padded to a common length and concatenated to the running batch;
finished or abandoned rows are cut out between steps, and leading columns that only padding
still used are trimmed. Each row samples with its own settings (greedy or temperature / top-k /
top-p / repetition penalty, its own seeded generator) and its own stop strings. With sdpa attention
the batcher builds the 4-D mask itself (sdpa_mask), and a step's pieces reach the event loop in one
wake-up (streaming.one_wake_per_loop).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from modelforge_common.errors import Unavailable
from modelforge_inference.backends.hf_models import ServedModel, TextGeneration
from modelforge_inference.domain import FINISH_LENGTH, FINISH_STOP, GenerationParams
from modelforge_inference.stops import RequestOutput
from modelforge_inference.streaming import one_wake_per_loop

log = logging.getLogger(__name__)


class Abandoned(Unavailable):
    """The request's caller went away, or its model was unloaded: its row was dropped from the batch."""


@dataclass(eq=False)
class BatchRequest:
    served: ServedModel
    input_ids: list[int]
    params: GenerationParams
    output: RequestOutput
    eos_ids: frozenset[int]
    # Called once from the scheduler thread with the result or the error that ended the request.
    done: Callable[[TextGeneration | BaseException], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    # Position id of the next token fed to the model (= real tokens already in the cache).
    position: int = 0
    finish_reason: str = ""

    def seen_ids(self, device: str) -> torch.Tensor:
        return torch.tensor(self.input_ids + self.generated, device=device)


def supports_batching(model: Any) -> bool:
    """Whether the model's cache is a plain DynamicCache that rows can be cut from and joined to."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    try:
        cache = DynamicCache(config=config)
    except (TypeError, ValueError):
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    # transformers' RepetitionPenaltyLogitsProcessor on one row.
    scores = logits.gather(0, seen)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(0, seen, scores)


def _plain_greedy(request: BatchRequest) -> bool:
    penalty = request.params.repetition_penalty
    return request.params.greedy and (penalty is None or penalty == 1.0)


def choose_token(logits: torch.Tensor, request: BatchRequest, device: str) -> int:
    """The next token of one row from its last-position logits (float32, shape [vocab])."""
    params = request.params
    if params.repetition_penalty is not None and params.repetition_penalty != 1.0:
        logits = _penalize(logits, request.seen_ids(device), params.repetition_penalty)
    if params.greedy:
        return int(logits.argmax())
    logits = logits / params.temperature
    if params.top_k:
        k = min(params.top_k, logits.shape[-1])
        threshold = torch.topk(logits, k).values[-1]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = logits.sort(descending=True)
        probs = ordered.softmax(-1)
        # Drop a token once the tokens before it already hold top_p of the mass (the first stays).
        drop = (probs.cumsum(-1) - probs) > params.top_p
        logits = logits.scatter(0, order, ordered.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=request.generator))


def _pad_left(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The cache's layers, each a DynamicLayer (supports_batching admits no other kind)."""
    layers: list[DynamicLayer] = []
    for layer in cache.layers:
        assert isinstance(layer, DynamicLayer)
        layers.append(layer)
    return layers


def _key_values(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """A filled layer's keys and values (a layer is filled by the forward pass that created the cache)."""
    assert layer.keys is not None and layer.values is not None
    return layer.keys, layer.values


def sdpa_mask(mask: torch.Tensor, queries: int) -> torch.Tensor:
    """The 4-D boolean mask [batch, 1, queries, keys] (True: attend) that transformers' sdpa path
    builds from a 2-D padding mask [batch, keys] for the last `queries` positions: a key is seen
    when it is not padding and not after the query."""
    keys = mask.shape[1]
    visible = mask.bool()[:, None, None, :]
    if queries == 1:
        return visible
    causal = torch.ones((queries, keys), dtype=torch.bool, device=mask.device).tril(diagonal=keys - queries)
    return visible & causal


def _has_padding(mask: torch.Tensor) -> bool:
    return not bool(mask.all())


class ContinuousBatcher:
    """Decodes the requests submitted for one base host, together, until each ends."""

    def __init__(self, served_host: Any, max_batch: int = 64) -> None:
        self.host = served_host
        self.max_batch = max_batch
        self._condition = threading.Condition()
        self._pending: list[BatchRequest] = []
        self._closed = False
        self._idle = False
        self._thread: threading.Thread | None = None
        # Batch state, touched only by the scheduler thread.
        self._rows: list[BatchRequest] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        # Whether any row of the batch has padding (a zero in the mask); without, the model is given
        # no mask and takes its plain causal path (building a mask per step cost a lone request a
        # tenth of a small model's step).
        self._padded = False
        self._last_tokens: list[int] = []
        self.steps = 0
        # Prefill forward passes (one per group of requests that joined together).
        self.prefills = 0
        self.largest_batch = 0
        model = served_host.model
        config = model.config
        # With sdpa attention the 4-D mask is built here (sdpa_mask), in a few tensor operations,
        # rather than by transformers from the 2-D one each forward pass (0.1 ms of a small
        # model's 1 to 2 ms pass). A sliding window would need more than padding and causality.
        self._sdpa_mask = (getattr(config, "_attn_implementation", None) == "sdpa"
                           and getattr(config, "sliding_window", None) is None)
        forward = getattr(model, "get_base_model", lambda: model)().forward
        accepted = inspect.signature(forward).parameters
        self._logits_to_keep = "logits_to_keep" in accepted
        # transformers 5.x renames past_key_values to cache.
        self._cache_kwarg = "cache" if "cache" in accepted else "past_key_values"

    @property
    def idle(self) -> bool:
        """Whether the scheduler thread waits for work (submits without a wake stay queued)."""
        with self._condition:
            return self._idle

    @property
    def active(self) -> int:
        """Requests waiting or decoding."""
        with self._condition:
            return len(self._pending) + len(self._rows)

    def submit(self, request: BatchRequest, wake: bool = True) -> None:
        """Queues the request for the next step. A running batch takes it at its next step; an
        idle scheduler waits for `wake()` when `wake` is False, so that a burst of requests
        submitted one after another (one event-loop iteration) is prefilled in one forward pass."""
        with self._condition:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append(request)
            if wake:
                self._notify()

    def wake(self) -> None:
        """Starts an idle scheduler on what was submitted."""
        with self._condition:
            if not self._closed:
                self._notify()

    def _notify(self) -> None:
        # Called with the condition held; the thread starts on the first wake, not the first submit.
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inference-batcher", daemon=True)
            self._thread.start()
        self._condition.notify()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
            thread = self._thread
            # Queued but never woken: no thread will end them.
            unstarted, self._pending = (self._pending, []) if thread is None else ([], self._pending)
        for request in unstarted:
            request.done(Abandoned("the model was unloaded while generating; try again"))
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        # Whether the last pass left out its decoding step for newcomers' prefill (_room_for_pending).
        deferred_step = False
        while True:
            with self._condition:
                while not self._pending and not self._rows and not self._closed:
                    self._idle = True
                    self._condition.wait()
                self._idle = False
                if self._closed:
                    leftover = self._pending + self._rows
                    self._pending, self._rows = [], []
                    break
                room = max(self.max_batch - len(self._rows), 0)
                joiners, self._pending = self._pending[:room], self._pending[room:]
            try:
                with self.host.lock, torch.inference_mode():
                    self._drop_abandoned()
                    prefilled = bool(joiners)
                    joiners = self._start(joiners)
                    deferred_step = (bool(self._rows) and not deferred_step and prefilled
                                     and self._room_for_pending())
                    if self._rows and not deferred_step:
                        self._step()
            except Exception as exc:  # a failed forward ends every request in it, never the thread
                log.exception("batched decoding step failed")
                with self._condition:
                    failed = list(dict.fromkeys(self._rows + joiners))
                    self._rows = []
                self._reset()
                for request in failed:
                    if request.finish_reason == "":
                        request.finish_reason = "error"
                        request.done(exc)
        for request in leftover:
            request.done(Abandoned("the model was unloaded while generating; try again"))

    def _room_for_pending(self) -> bool:
        """Whether requests arrived during the prefill that just ran and can join: they are prefilled
        next, before the running rows' next step (prefill first), so a user arriving a moment after
        another waits for one forward pass before its first token, not for a decoding step and then
        its prefill. Never twice in a row: a stream of arrivals still lets the batch decode."""
        with self._condition:
            return bool(self._pending) and len(self._rows) < self.max_batch

    def _reset(self) -> None:
        self._cache = None
        self._mask = None
        self._padded = False
        self._last_tokens = []

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor,
                 cache: DynamicCache, adapters: list[str]) -> torch.Tensor:
        """Last-position logits; `mask` None when no row has padding."""
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._logits_to_keep else {}
        kwargs[self._cache_kwarg] = cache
        if mask is not None and self._sdpa_mask:
            attention_mask: torch.Tensor | None = sdpa_mask(mask, input_ids.shape[1])
        else:
            attention_mask = mask
        adapter_context, adapter_kwargs = self.host.adapter_setup(adapters)
        with adapter_context:
            out = self.host.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=positions,
                use_cache=True,
                **adapter_kwargs,
                **kwargs,
            )
        logits: torch.Tensor = out.logits
        return logits[:, -1, :].float()

    def _drop_abandoned(self) -> None:
        keep = [i for i, row in enumerate(self._rows) if not row.cancel.is_set()]
        if len(keep) == len(self._rows):
            return
        gone = [row for row in self._rows if row.cancel.is_set()]
        self._keep_rows(keep)
        for row in gone:
            row.finish_reason = "abandoned"
            row.done(Abandoned("the caller went away"))

    def _start(self, joiners: list[BatchRequest]) -> list[BatchRequest]:
        """Prefills the newcomers in one forward pass, gives each its first token and joins them
        to the batch. Returns the newcomers still running."""
        for request in [r for r in joiners if r.cancel.is_set()]:
            request.finish_reason = "abandoned"
            request.done(Abandoned("the caller went away"))
        joiners = [r for r in joiners if not r.cancel.is_set()]
        if not joiners:
            return []
        device = self.host.device
        length = max(len(r.input_ids) for r in joiners)
        # Built as lists and made tensors once (a tensor and a slice assignment per row cost more).
        rows_ids: list[list[int]] = []
        rows_mask: list[list[int]] = []
        for request in joiners:
            missing = length - len(request.input_ids)
            rows_ids.append([0] * missing + request.input_ids)
            rows_mask.append([0] * missing + [1] * len(request.input_ids))
            request.position = len(request.input_ids)
        ids = torch.tensor(rows_ids, dtype=torch.long, device=device)
        mask = torch.tensor(rows_mask, dtype=torch.long, device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.host.model.config)
        self.prefills += 1
        padded = any(len(r.input_ids) < length for r in joiners)
        adapters = [r.served.adapter_name for r in joiners]
        logits = self._forward(ids, mask if padded else None, positions, cache, adapters)
        self._join(joiners, cache, mask)
        self._advance(joiners, logits, offset=len(self._rows) - len(joiners))
        return [r for r in joiners if r in self._rows]

    def _join(self, joiners: list[BatchRequest], cache: DynamicCache, mask: torch.Tensor) -> None:
        first_tokens = [0] * len(joiners)  # set by _advance
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, mask
        else:
            length = max(self._mask.shape[1], mask.shape[1])
            for mine, theirs in zip(_layers(self._cache), _layers(cache), strict=True):
                my_keys, my_values = _key_values(mine)
                their_keys, their_values = _key_values(theirs)
                mine.keys = torch.cat([_pad_left(my_keys, length, -2), _pad_left(their_keys, length, -2)])
                mine.values = torch.cat([_pad_left(my_values, length, -2), _pad_left(their_values, length, -2)])
            self._mask = torch.cat([_pad_left(self._mask, length, 1), _pad_left(mask, length, 1)])
        self._padded = _has_padding(self._mask)
        with self._condition:
            self._rows.extend(joiners)
        self._last_tokens.extend(first_tokens)
        self.largest_batch = max(self.largest_batch, len(self._rows))

    def _step(self) -> None:
        assert self._cache is not None and self._mask is not None
        device = self.host.device
        ids = torch.tensor(self._last_tokens, device=device)[:, None]
        mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        positions = torch.tensor([row.position for row in self._rows], device=device)[:, None]
        logits = self._forward(ids, mask if self._padded else None, positions, self._cache,
                               [r.served.adapter_name for r in self._rows])
        self._mask = mask
        self.steps += 1
        self._advance(list(self._rows), logits, offset=0)

    def _advance(self, rows: list[BatchRequest], logits: torch.Tensor, offset: int) -> None:
        """Picks each row's next token, hands it on, and cuts out the rows that ended; the rows'
        pieces and ends reach the event loop in one wake-up."""
        with one_wake_per_loop():
            self._advance_rows(rows, logits, offset)

    def _advance_rows(self, rows: list[BatchRequest], logits: torch.Tensor, offset: int) -> None:
        device = self.host.device
        ended: list[int] = []
        # Plain greedy rows (most of them) in one argmax over the batch.
        argmax = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            token = argmax[i] if _plain_greedy(row) else choose_token(logits[i], row, device)
            row.generated.append(token)
            row.position += 1
            self._last_tokens[offset + i] = token
            row.output.push([token])
            if row.output.stopped or token in row.eos_ids:
                row.finish_reason = FINISH_STOP
            elif len(row.generated) >= row.params.max_new_tokens:
                row.finish_reason = FINISH_LENGTH
            if row.finish_reason:
                ended.append(offset + i)
        if not ended:
            return
        finished = [self._rows[i] for i in ended]
        self._keep_rows([i for i in range(len(self._rows)) if i not in set(ended)])
        for row in finished:
            row.output.finish()
            row.done(TextGeneration(row.output.text, len(row.generated), len(row.input_ids), row.finish_reason))

    def _keep_rows(self, keep: list[int]) -> None:
        with self._condition:
            self._rows = [self._rows[i] for i in keep]
        self._last_tokens = [self._last_tokens[i] for i in keep]
        if not keep:
            self._reset()
            return
        assert self._cache is not None and self._mask is not None
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        # Columns that only the removed rows used (padding for everyone left) are dropped.
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else mask.shape[1]
        self._mask = mask[:, start:]
        self._padded = _has_padding(self._mask)
        for layer in _layers(self._cache):
            keys, values = _key_values(layer)
            layer.keys = keys.index_select(0, index)[:, :, start:]
            layer.values = values.index_select(0, index)[:, :, start:]
