"""The model lookups of the playground and of the /v1 completions (readcache.ModelLookups):
concurrent generate, stream and completion requests for one model make one registry GetModel call;
a model deleted through this replica is not served from the cache; a generate invalidates none of
the read caches (it changes nothing)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gateway_fakes import FakeServices, running_client, settings_for

GENERATE = {"model_id": 1, "prompt": "Hello there", "max_new_tokens": 2}
TEXT_MODEL = "model_20240315_143021"  # registry id 1, a text-generation model
CHAT = {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 2}


async def wait_for(condition: Any) -> None:
    """Yields to the event loop until condition() holds (the test's timeout bounds it)."""
    while not condition():  # noqa: ASYNC110 - a counter of the cache, no event to wait on
        await asyncio.sleep(0.005)


async def test_concurrent_generate_requests_make_one_registry_lookup(fakes: FakeServices) -> None:
    fakes.registry.get_model_gate = fakes.gate()
    async with running_client(settings_for(fakes, models_cache_s=60)) as (app, client):
        lookups = app.state.model_lookups
        paths = ["/api/playground/generate"] * 4 + ["/api/playground/new"] * 2 + ["/api/playground/stream"] * 2
        requests = [asyncio.create_task(client.post(path, json=GENERATE)) for path in paths]
        await wait_for(lambda: lookups.stats.shared == len(paths) - 1)
        fakes.release(fakes.registry.get_model_gate)
        responses = await asyncio.gather(*requests)
        assert [response.status_code for response in responses] == [200] * len(paths)
        assert fakes.registry.get_model_calls == 1
        # Every request reached inference with the registry's record of the model.
        assert len(fakes.inference.requests) == len(paths)
        assert {r.model.model_id for r in fakes.inference.requests} == {"model_20240315_143021"}
        assert {r.model.path for r in fakes.inference.requests} == {fakes.registry.models[1].path}
        # And the next request is answered from the cache too.
        assert (await client.post("/api/playground/generate", json=GENERATE)).status_code == 200
        assert fakes.registry.get_model_calls == 1


async def test_a_deleted_model_is_not_served_from_the_cache(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, models_cache_s=60)) as (_, client):
        for model_id, delete in ((1, "/api/models/1"), ("model_20240315_143022", "/v1/models/model_20240315_143022")):
            body = {**GENERATE, "model_id": model_id}
            assert (await client.post("/api/playground/generate", json=body)).status_code == 200
            calls = fakes.registry.get_model_calls
            assert (await client.post("/api/playground/generate", json=body)).status_code == 200
            assert fakes.registry.get_model_calls == calls  # cached
            assert (await client.delete(delete)).status_code == 200, delete
            gone = await client.post("/api/playground/generate", json=body)
            assert gone.status_code == 404, gone.text
            assert gone.json()["detail"] == f"Model {model_id} not found"
            streamed = await client.post("/api/playground/stream", json=body)
            assert streamed.status_code == 404


async def test_concurrent_v1_completions_make_one_registry_lookup(fakes: FakeServices) -> None:
    fakes.registry.get_model_gate = fakes.gate()
    async with running_client(settings_for(fakes, models_cache_s=60)) as (app, client):
        lookups = app.state.model_lookups
        completion = {"model": TEXT_MODEL, "prompt": "Hello there", "max_tokens": 2}
        calls = [("/v1/chat/completions", CHAT)] * 4 + [("/v1/chat/completions", {**CHAT, "stream": True})] * 2
        calls += [("/v1/completions", completion), ("/v1/completions", {**completion, "stream": True})]
        requests = [asyncio.create_task(client.post(path, json=body)) for path, body in calls]
        await wait_for(lambda: lookups.stats.shared == len(calls) - 1)
        fakes.release(fakes.registry.get_model_gate)
        responses = await asyncio.gather(*requests)
        assert [response.status_code for response in responses] == [200] * len(calls), responses[0].text
        assert fakes.registry.get_model_calls == 1
        assert len(fakes.inference.requests) == len(calls)
        assert {r.model.model_id for r in fakes.inference.requests} == {TEXT_MODEL}
        assert {r.model.path for r in fakes.inference.requests} == {fakes.registry.models[1].path}
        # The playground names the same model by model_id: the same cached lookup.
        body = {**GENERATE, "model_id": TEXT_MODEL}
        assert (await client.post("/api/playground/generate", json=body)).status_code == 200
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert fakes.registry.get_model_calls == 1


@pytest.mark.parametrize("delete", ["/api/models/1", f"/v1/models/{TEXT_MODEL}"])
async def test_a_deleted_model_is_not_served_by_v1_completions(fakes: FakeServices, delete: str) -> None:
    async with running_client(settings_for(fakes, models_cache_s=60)) as (_, client):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        calls = fakes.registry.get_model_calls
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert fakes.registry.get_model_calls == calls  # cached
        assert (await client.delete(delete)).status_code == 200, delete
        served = len(fakes.inference.requests)
        for path, body in (
            ("/v1/chat/completions", CHAT),
            ("/v1/chat/completions", {**CHAT, "stream": True}),
            ("/v1/completions", {"model": TEXT_MODEL, "prompt": "Hello there"}),
        ):
            gone = await client.post(path, json=body)
            assert gone.status_code == 404, gone.text
            assert gone.json()["error"]["code"] == "model_not_found"
            assert gone.json()["error"]["param"] == "model"
        assert len(fakes.inference.requests) == served  # inference was never asked


async def test_a_failed_lookup_is_not_kept(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, models_cache_s=60)) as (_, client):
        body = {**GENERATE, "model_id": "model_later"}
        assert (await client.post("/api/playground/generate", json=body)).status_code == 404
        fakes.registry.models[1].model_id = "model_later"  # registered since
        assert (await client.post("/api/playground/generate", json=body)).status_code == 200


async def test_generating_invalidates_no_read_cache(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, models_cache_s=60)) as (app, client):
        listings, status = app.state.model_listings.stats, app.state.status_view.answers.stats
        before = (listings.invalidations, status.invalidations)
        for path in ("/api/playground/generate", "/api/playground/new", "/api/playground/stream"):
            assert (await client.post(path, json=GENERATE)).status_code == 200
        assert (listings.invalidations, status.invalidations) == before
        # A write still does.
        assert (await client.post("/api/finetune/reset_status")).status_code == 200
        assert listings.invalidations > before[0]


async def test_with_the_bound_at_zero_every_request_looks_its_model_up(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, models_cache_s=0)) as (_, uncached):
        for _ in range(3):
            assert (await uncached.post("/api/playground/generate", json=GENERATE)).status_code == 200
        assert fakes.registry.get_model_calls == 3
