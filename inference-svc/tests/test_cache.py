from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from modelforge_common.errors import ResourceExhausted
from modelforge_inference.cache import ModelCache


@dataclass
class Weights:
    name: str
    nbytes: int


class Loader:
    """Counts loads; a load can be held until `gate` is set."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def __call__(self, name: str) -> Callable[[], Awaitable[Weights]]:
        async def load() -> Weights:
            self.calls.append(name)
            await self.gate.wait()
            return Weights(name, self.sizes[name])

        return load


def make_cache(max_items: int = 2, max_bytes: int = 1000) -> tuple[ModelCache[str, Weights], list[int]]:
    releases: list[int] = []
    cache: ModelCache[str, Weights] = ModelCache(
        max_items, max_bytes, size_of=lambda w: w.nbytes, release=lambda: releases.append(1)
    )
    return cache, releases


async def test_evicts_least_recently_used_over_the_count() -> None:
    cache, releases = make_cache(max_items=2)
    loader = Loader({"a": 1, "b": 1, "c": 1})
    await cache.get("a", loader("a"))
    await cache.get("b", loader("b"))
    await cache.get("a", loader("a"))  # a is now the most recently used
    await cache.get("c", loader("c"))
    assert cache.loaded_keys() == ["a", "c"]
    assert loader.calls == ["a", "b", "c"]
    assert releases


async def test_evicts_until_the_bytes_fit() -> None:
    cache, _ = make_cache(max_items=5, max_bytes=100)
    loader = Loader({"a": 40, "b": 40, "c": 50})
    await cache.get("a", loader("a"), estimate_bytes=40)
    await cache.get("b", loader("b"), estimate_bytes=40)
    await cache.get("c", loader("c"), estimate_bytes=50)
    assert cache.loaded_keys() == ["b", "c"]
    assert cache.total_bytes == 90


async def test_evicts_after_load_when_the_real_size_exceeds_the_estimate() -> None:
    cache, _ = make_cache(max_items=5, max_bytes=100)
    loader = Loader({"a": 60, "b": 60})
    await cache.get("a", loader("a"), estimate_bytes=60)
    await cache.get("b", loader("b"), estimate_bytes=0)
    assert cache.loaded_keys() == ["b"]


async def test_a_model_larger_than_the_budget_is_refused_before_loading() -> None:
    cache, _ = make_cache(max_bytes=100)
    loader = Loader({"big": 500})
    with pytest.raises(ResourceExhausted, match="MODELFORGE_INFERENCE_MAX_BYTES"):
        await cache.get("big", loader("big"), estimate_bytes=500)
    assert loader.calls == []


async def test_a_loaded_model_larger_than_the_budget_is_not_kept() -> None:
    cache, releases = make_cache(max_bytes=100)
    loader = Loader({"small": 10, "big": 500})
    await cache.get("small", loader("small"))
    with pytest.raises(ResourceExhausted):
        await cache.get("big", loader("big"))
    assert cache.loaded_keys() == ["small"]
    assert releases


async def test_concurrent_requests_share_one_load() -> None:
    cache, _ = make_cache()
    loader = Loader({"a": 1})
    loader.gate.clear()
    waiters = [asyncio.create_task(cache.get("a", loader("a"))) for _ in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    loader.gate.set()
    results = await asyncio.gather(*waiters)
    assert loader.calls == ["a"]
    assert cache.loads == 1
    assert results[0] is results[1] is results[2]


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache, _ = make_cache()
    attempts = 0
    gate = asyncio.Event()

    async def failing() -> Weights:
        nonlocal attempts
        attempts += 1
        await gate.wait()
        raise RuntimeError("disk on fire")

    waiters = [asyncio.create_task(cache.get("a", failing)) for _ in range(2)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert [str(o) for o in outcomes] == ["disk on fire", "disk on fire"]
    assert attempts == 1
    assert "a" not in cache
    loader = Loader({"a": 1})
    assert (await cache.get("a", loader("a"))).name == "a"


async def test_a_waiter_that_goes_away_does_not_cancel_the_shared_load() -> None:
    cache, _ = make_cache()
    loader = Loader({"a": 1})
    loader.gate.clear()
    first = asyncio.create_task(cache.get("a", loader("a")))
    second = asyncio.create_task(cache.get("a", loader("a")))
    await asyncio.sleep(0)
    first.cancel()
    loader.gate.set()
    assert (await second).name == "a"
    assert first.cancelled()
    assert loader.calls == ["a"]


async def test_drop_removes_matching_models_and_releases_memory() -> None:
    cache, releases = make_cache(max_items=3)
    loader = Loader({"a": 1, "b": 1})
    await cache.get("a", loader("a"))
    await cache.get("b", loader("b"))
    assert cache.drop(lambda key: key == "a") == 1
    assert cache.loaded_keys() == ["b"]
    assert releases == [1]
    assert cache.drop(lambda key: key == "a") == 0


async def test_a_model_dropped_while_loading_is_served_once_but_not_kept() -> None:
    cache, _ = make_cache()
    loader = Loader({"a": 1})
    loader.gate.clear()
    waiter = asyncio.create_task(cache.get("a", loader("a")))
    await asyncio.sleep(0)
    assert cache.drop(lambda key: key == "a") == 0
    loader.gate.set()
    assert (await waiter).name == "a"
    assert "a" not in cache


def test_needs_room_for_one_model() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ModelCache(0, 10, size_of=len)
