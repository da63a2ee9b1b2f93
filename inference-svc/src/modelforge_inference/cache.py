"""LRU cache of loaded models under a count and a memory budget, with one load per key.

Concurrent requests for a model that is still loading wait for that one load (single flight);
a caller that goes away does not cancel the load the others wait on. Before a load, least
recently used models are evicted to make room for its estimated size; after it, for its real one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from modelforge_common.errors import ResourceExhausted

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    nbytes: int


class ModelCache(Generic[K, V]):
    def __init__(
        self,
        max_items: int,
        max_bytes: int,
        size_of: Callable[[V], int],
        release: Callable[[], None] = lambda: None,
    ) -> None:
        """`size_of` gives a loaded value's bytes; `release` runs after values were dropped (to
        collect garbage and return freed accelerator memory)."""
        if max_items < 1 or max_bytes < 1:
            raise ValueError("the cache needs room for at least one model")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._release = release
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._loading: dict[K, asyncio.Task[V]] = {}
        self._reserved_bytes = 0
        self._dropped_while_loading: set[K] = set()
        self.loads = 0

    @property
    def total_bytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def loaded_keys(self) -> list[K]:
        """Cached keys, least recently used first."""
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    async def get(self, key: K, load: Callable[[], Awaitable[V]], estimate_bytes: int = 0) -> V:
        """The cached value, or the result of one shared `load()` (other callers wait for it)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry.value
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._load(key, load, estimate_bytes))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._load_finished(key, done))
        return await asyncio.shield(task)

    def drop(self, predicate: Callable[[K], bool]) -> int:
        """Drops every cached value whose key matches (a load in flight is not kept once done);
        returns how many were cached."""
        dropped = [key for key in self._entries if predicate(key)]
        for key in dropped:
            del self._entries[key]
        self._dropped_while_loading.update(key for key in self._loading if predicate(key))
        if dropped:
            self._release()
        return len(dropped)

    def clear(self) -> int:
        return self.drop(lambda _key: True)

    def _load_finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        # Mark the error retrieved: every waiter may have gone away.
        if not task.cancelled():
            task.exception()

    async def _load(self, key: K, load: Callable[[], Awaitable[V]], estimate_bytes: int) -> V:
        if estimate_bytes > self.max_bytes:
            raise ResourceExhausted(
                f"the model needs about {estimate_bytes} bytes, more than the inference budget of {self.max_bytes}"
                " (MODELFORGE_INFERENCE_MAX_BYTES)"
            )
        self._make_room(estimate_bytes)
        self._reserved_bytes += estimate_bytes
        try:
            value = await load()
        finally:
            self._reserved_bytes -= estimate_bytes
        self.loads += 1
        nbytes = self._size_of(value)
        if key in self._dropped_while_loading:
            self._dropped_while_loading.discard(key)
            return value
        if nbytes > self.max_bytes:
            del value
            self._release()
            raise ResourceExhausted(
                f"the loaded model takes {nbytes} bytes, more than the inference budget of {self.max_bytes}"
                " (MODELFORGE_INFERENCE_MAX_BYTES)"
            )
        self._entries[key] = _Entry(value, nbytes)
        self._evict(keep=key, incoming_bytes=0, incoming_items=0)
        return value

    def _make_room(self, incoming_bytes: int) -> None:
        self._evict(keep=None, incoming_bytes=self._reserved_bytes + incoming_bytes, incoming_items=len(self._loading))

    def _evict(self, keep: K | None, incoming_bytes: int, incoming_items: int) -> None:
        evicted = False
        while self._entries:
            over_count = len(self._entries) + incoming_items > self.max_items
            over_bytes = self.total_bytes + incoming_bytes > self.max_bytes
            if not (over_count or over_bytes):
                break
            victim = next((k for k in self._entries if k != keep), None)
            if victim is None:
                break
            log.info("evicting model %s from the inference cache", victim)
            del self._entries[victim]
            evicted = True
        if evicted:
            self._release()
