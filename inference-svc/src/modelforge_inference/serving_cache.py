"""LRU cache of served models that share base models, under a count and a memory budget.

A base model is loaded once; each registered model served from it (a LoRA adapter, or the base
itself) is an entry of its own that costs only its own bytes. The budget counts every base once
plus every model's own bytes; the count limit counts models. Least recently used models go
first; a base goes with its last model. Loads are single flight per model and per base, and a
caller that goes away does not cancel a load others wait on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from modelforge_common.errors import ResourceExhausted

log = logging.getLogger(__name__)

MK = TypeVar("MK", bound=Hashable)
BK = TypeVar("BK", bound=Hashable)
M = TypeVar("M")
B = TypeVar("B")

BUDGET_HINT = "(MODELFORGE_INFERENCE_MAX_BYTES)"


@dataclass
class _Base(Generic[B, MK]):
    value: B
    nbytes: int
    models: set[MK] = field(default_factory=set)


@dataclass
class _Model(Generic[M, BK]):
    value: M
    base_key: BK
    nbytes: int


class ServingCache(Generic[MK, BK, M, B]):
    def __init__(
        self,
        max_models: int,
        max_bytes: int,
        release_model: Callable[[M], None] = lambda _m: None,
        release_base: Callable[[B], None] = lambda _b: None,
        after_release: Callable[[], None] = lambda: None,
    ) -> None:
        """`release_model` / `release_base` run when an entry leaves the cache (detach an adapter,
        stop a base's scheduler); `after_release` once after entries left (collect memory)."""
        if max_models < 1 or max_bytes < 1:
            raise ValueError("the cache needs room for at least one model")
        self.max_items = max_models
        self.max_bytes = max_bytes
        self._release_model = release_model
        self._release_base = release_base
        self._after_release = after_release
        self._bases: dict[BK, _Base[B, MK]] = {}
        self._models: OrderedDict[MK, _Model[M, BK]] = OrderedDict()
        self._loading: dict[MK, asyncio.Task[M]] = {}
        self._base_loading: dict[BK, asyncio.Task[B]] = {}
        # Bases that a model load in flight is attaching to: never evicted meanwhile.
        self._pinned: dict[BK, int] = {}
        self._reserved_bytes = 0
        self._dropped_while_loading: set[MK] = set()
        self.loads = 0
        self.base_loads = 0

    @property
    def total_bytes(self) -> int:
        return sum(b.nbytes for b in self._bases.values()) + sum(m.nbytes for m in self._models.values())

    def loaded_keys(self) -> list[MK]:
        """Cached model keys, least recently used first."""
        return list(self._models)

    def base_keys(self) -> list[BK]:
        return list(self._bases)

    def bytes_of_base(self, base_key: BK) -> int:
        return self._bases[base_key].nbytes

    def bytes_of_model(self, key: MK) -> int:
        return self._models[key].nbytes

    def base_value(self, base_key: BK) -> B | None:
        entry = self._bases.get(base_key)
        return None if entry is None else entry.value

    def __contains__(self, key: object) -> bool:
        return key in self._models

    async def get(
        self,
        key: MK,
        base_key: BK,
        load_base: Callable[[], Awaitable[tuple[B, int]]],
        attach: Callable[[B], Awaitable[tuple[M, int]]],
        base_estimate: int = 0,
        own_estimate: int = 0,
    ) -> M:
        """The cached model, or the result of one shared load: its base (loaded once for all its
        models) and then `attach(base)`, which returns the model and its own bytes."""
        entry = self._models.get(key)
        if entry is not None:
            self._models.move_to_end(key)
            return entry.value
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._load(key, base_key, load_base, attach, base_estimate, own_estimate))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._finished(self._loading, key, done))
        return await asyncio.shield(task)

    def drop(self, predicate: Callable[[MK], bool]) -> int:
        """Drops every cached model whose key matches (a load in flight is not kept once done),
        and bases left without models; returns how many models were cached."""
        dropped = [key for key in self._models if predicate(key)]
        for key in dropped:
            self._remove_model(key)
        self._dropped_while_loading.update(key for key in self._loading if predicate(key))
        if dropped:
            self._after_release()
        return len(dropped)

    def clear(self) -> int:
        count = self.drop(lambda _key: True)
        for base_key in [k for k, b in self._bases.items() if not b.models and k not in self._pinned]:
            self._remove_base(base_key)
        return count

    @staticmethod
    def _finished(tasks: dict, key: Hashable, task: asyncio.Task) -> None:  # type: ignore[type-arg]
        if tasks.get(key) is task:
            del tasks[key]
        # Mark the error retrieved: every waiter may have gone away.
        if not task.cancelled():
            task.exception()

    def _check_fits(self, nbytes: int, what: str) -> None:
        if nbytes > self.max_bytes:
            raise ResourceExhausted(
                f"{what} needs about {nbytes} bytes, more than the inference budget of {self.max_bytes} {BUDGET_HINT}"
            )

    async def _load(
        self,
        key: MK,
        base_key: BK,
        load_base: Callable[[], Awaitable[tuple[B, int]]],
        attach: Callable[[B], Awaitable[tuple[M, int]]],
        base_estimate: int,
        own_estimate: int,
    ) -> M:
        base_missing = base_key not in self._bases
        self._check_fits((base_estimate if base_missing else self._bases[base_key].nbytes) + own_estimate, "the model")
        self._pinned[base_key] = self._pinned.get(base_key, 0) + 1
        try:
            base = await self._base(base_key, load_base, base_estimate)
            self._make_room(own_estimate, keep=None)
            self._reserved_bytes += own_estimate
            try:
                value, nbytes = await attach(base)
            finally:
                self._reserved_bytes -= own_estimate
        finally:
            self._pinned[base_key] -= 1
            if not self._pinned[base_key]:
                del self._pinned[base_key]
        self.loads += 1
        if key in self._dropped_while_loading:
            self._dropped_while_loading.discard(key)
            self._release_model(value)
            return value
        self._models[key] = _Model(value, base_key, nbytes)
        self._bases[base_key].models.add(key)
        self._evict(keep=key, incoming_bytes=0, incoming_models=0)
        if self.total_bytes > self.max_bytes:
            self._remove_model(key)
            self._after_release()
            raise ResourceExhausted(
                f"the loaded model takes {nbytes} bytes beside its base, more than fits the inference budget of"
                f" {self.max_bytes} {BUDGET_HINT}"
            )
        return value

    async def _base(self, base_key: BK, load_base: Callable[[], Awaitable[tuple[B, int]]], estimate: int) -> B:
        entry = self._bases.get(base_key)
        if entry is not None:
            return entry.value
        task = self._base_loading.get(base_key)
        if task is None:
            task = asyncio.create_task(self._load_base(base_key, load_base, estimate))
            self._base_loading[base_key] = task
            task.add_done_callback(lambda done: self._finished(self._base_loading, base_key, done))
        return await asyncio.shield(task)

    async def _load_base(self, base_key: BK, load_base: Callable[[], Awaitable[tuple[B, int]]], estimate: int) -> B:
        self._make_room(estimate, keep=None)
        self._reserved_bytes += estimate
        try:
            value, nbytes = await load_base()
        finally:
            self._reserved_bytes -= estimate
        self.base_loads += 1
        if nbytes > self.max_bytes:
            self._release_base(value)
            self._after_release()
            self._check_fits(nbytes, "the loaded base model")
        self._bases[base_key] = _Base(value, nbytes)
        return value

    def _make_room(self, incoming_bytes: int, keep: MK | None) -> None:
        self._evict(keep, self._reserved_bytes + incoming_bytes, len(self._loading))

    def _evict(self, keep: MK | None, incoming_bytes: int, incoming_models: int) -> None:
        evicted = False
        # Bases without models (their attach failed) go first.
        for base_key in [k for k, b in self._bases.items() if not b.models and k not in self._pinned]:
            if self.total_bytes + incoming_bytes <= self.max_bytes:
                break
            self._remove_base(base_key)
            evicted = True
        while self._models:
            over_count = len(self._models) + incoming_models > self.max_items
            over_bytes = self.total_bytes + incoming_bytes > self.max_bytes
            if not (over_count or over_bytes):
                break
            victim = next((k for k in self._models if k != keep), None)
            if victim is None:
                break
            log.info("evicting model %s from the inference cache", victim)
            self._remove_model(victim)
            evicted = True
        if evicted:
            self._after_release()

    def _remove_model(self, key: MK) -> None:
        entry = self._models.pop(key)
        self._release_model(entry.value)
        base = self._bases.get(entry.base_key)
        if base is None:
            return
        base.models.discard(key)
        if not base.models and entry.base_key not in self._pinned:
            self._remove_base(entry.base_key)

    def _remove_base(self, base_key: BK) -> None:
        entry = self._bases.pop(base_key)
        log.info("evicting base model %s from the inference cache", base_key)
        self._release_base(entry.value)
