"""The read caches behind GET /api/training_status and GET /api/models (readcache.py): concurrent
reads share one upstream call, answers are reused only within their bound, this replica's writes
and the training events invalidate them at once, events newer than the trainer's answer show at
once, and a setting turns them off. Upstream calls are counted on the fakes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from gateway_fakes import FakeServices, make_model, running_client, settings_for
from test_hardening import sample
from test_training import START
from test_ws import event, publish, running_job, wait_until_subscribed

from modelforge.v1 import common_pb2
from modelforge_common.testing import nats_server
from modelforge_gateway.main import create_app
from modelforge_gateway.readcache import ModelListings, SingleFlightCache, TrainerAnswer, TrainingStatusView

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountedFetch:
    """An upstream call that counts itself and waits for its gate; answers its call number."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False

    async def __call__(self) -> int:
        self.calls += 1
        number = self.calls
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("upstream down")
        return number


# --- SingleFlightCache ---------------------------------------------------------------------------------


async def test_concurrent_reads_share_one_call_and_reuse_it_within_the_bound() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[int] = SingleFlightCache(1.0, clock=clock)
    fetch = CountedFetch()
    fetch.gate.clear()
    readers = [asyncio.create_task(cache.get("k", fetch)) for _ in range(10)]
    await asyncio.sleep(0)
    fetch.gate.set()
    assert await asyncio.gather(*readers) == [1] * 10
    assert (fetch.calls, cache.stats.shared) == (1, 9)
    clock.now += 0.4
    assert await cache.get("k", fetch) == 1
    assert fetch.calls == 1
    # Another key is another call.
    assert await cache.get("other", fetch) == 2


async def test_past_half_the_bound_a_read_refreshes_in_the_background_and_past_the_bound_it_waits() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[int] = SingleFlightCache(1.0, clock=clock)
    fetch = CountedFetch()
    assert await cache.get("k", fetch) == 1
    clock.now += 0.6
    fetch.gate.clear()
    assert await cache.get("k", fetch) == 1  # answered from the cache, a refresh started
    assert await cache.get("k", fetch) == 1  # one refresh at a time
    await asyncio.sleep(0)
    assert fetch.calls == 2
    fetch.gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await cache.get("k", fetch) == 2
    # The refreshed answer's age counts from when its call started: past the bound, read again.
    clock.now += 1.0
    assert await cache.get("k", fetch) == 3


async def test_an_answer_is_never_older_than_the_bound() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[int] = SingleFlightCache(1.0, clock=clock)
    fetch = CountedFetch()
    assert await cache.get("k", fetch) == 1
    clock.now += 1.0
    assert await cache.get("k", fetch) == 2


async def test_invalidate_during_a_call_keeps_its_answer_from_later_reads() -> None:
    cache: SingleFlightCache[int] = SingleFlightCache(60.0, clock=FakeClock())
    fetch = CountedFetch()
    fetch.gate.clear()
    before = asyncio.create_task(cache.get("k", fetch))
    await asyncio.sleep(0)
    cache.invalidate()  # a write answered while the first call was in flight
    after = asyncio.create_task(cache.get("k", fetch))
    await asyncio.sleep(0)
    fetch.gate.set()
    assert (await before, await after) == (1, 2)
    assert await cache.get("k", fetch) == 2  # what was read before the write was not stored
    assert fetch.calls == 2


async def test_errors_reach_every_waiter_and_are_not_cached() -> None:
    cache: SingleFlightCache[int] = SingleFlightCache(60.0, clock=FakeClock())
    fetch = CountedFetch()
    fetch.gate.clear()
    fetch.fail_next = True
    readers = [asyncio.create_task(cache.get("k", fetch)) for _ in range(3)]
    await asyncio.sleep(0)
    fetch.gate.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    assert await cache.get("k", fetch) == 2


async def test_a_waiter_that_goes_away_does_not_cancel_the_others_call() -> None:
    cache: SingleFlightCache[int] = SingleFlightCache(60.0, clock=FakeClock())
    fetch = CountedFetch()
    fetch.gate.clear()
    leaving = asyncio.create_task(cache.get("k", fetch))
    staying = asyncio.create_task(cache.get("k", fetch))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    fetch.gate.set()
    assert await staying == 1
    assert leaving.cancelled()


async def test_max_age_zero_turns_the_cache_off() -> None:
    cache: SingleFlightCache[int] = SingleFlightCache(0.0, clock=FakeClock())
    fetch = CountedFetch()
    assert [await cache.get("k", fetch) for _ in range(3)] == [1, 2, 3]
    assert not cache.enabled


# --- TrainingStatusView ----------------------------------------------------------------------------------


IDLE: dict[str, Any] = {
    "status": "idle",
    "progress": 0.0,
    "current_epoch": 0,
    "total_epochs": 0,
    "current_step": 0,
    "total_steps": 0,
    "loss": None,
    "learning_rate": None,
    "job_id": None,
    "message": "No training in progress",
    "error": None,
}


def answer_running(last_seq: int = 3) -> TrainerAnswer:
    fields = {
        "status": "training",
        "progress": 20.0,
        "current_epoch": 1,
        "total_epochs": 3,
        "current_step": 20,
        "total_steps": 100,
        "loss": 1.5,
        "learning_rate": 0.0002,
        "job_id": "train_1",
        "message": "Training epoch 1/3 - Step 20/100",
        "error": None,
    }
    return TrainerAnswer(fields, last_seq)


def ws_event(seq: int, kind: str = "progress", job_id: str = "train_1", **fields: Any) -> dict[str, Any]:
    """An event as convert.event_json renders it."""
    base: dict[str, Any] = {
        "type": kind,
        "job_id": job_id,
        "seq": seq,
        "timestamp": "2024-03-15T14:30:22.250Z",
        "status": "running",
        "progress": 21.0,
        "current_epoch": 1,
        "total_epochs": 3,
        "current_step": 21,
        "total_steps": 100,
        "loss": 1.4,
        "learning_rate": 0.0002,
        "message": "Training epoch 1/3 - Step 21/100",
        "error": None,
        "metrics": {},
        "model_id": None,
        "epoch": 0.21,
    }
    return {**base, **fields}


async def read(view: TrainingStatusView, fetch: Any, job_id: str = "") -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await view.body(job_id, fetch))
    return result


async def test_newer_events_lay_over_the_trainers_answer_and_older_ones_do_not() -> None:
    view = TrainingStatusView(60.0, clock=FakeClock())
    calls = 0

    async def fetch() -> TrainerAnswer:
        nonlocal calls
        calls += 1
        return answer_running(last_seq=3)

    assert (await read(view, fetch))["current_step"] == 20
    view.on_event(ws_event(3, current_step=99))  # not newer than the trainer's answer
    assert (await read(view, fetch))["current_step"] == 20
    view.on_event(ws_event(4))
    status = await read(view, fetch)
    assert (status["status"], status["current_step"], status["loss"]) == ("training", 21, 1.4)
    assert status["message"] == "Training epoch 1/3 - Step 21/100"
    # A log line is no state line: the message stays, the rest follows the newest event.
    view.on_event(ws_event(5, kind="log", message="saving checkpoint", current_step=22))
    status = await read(view, fetch)
    assert (status["current_step"], status["message"]) == (22, "Training epoch 1/3 - Step 21/100")
    view.on_event(ws_event(4, current_step=5))  # late, out of order: ignored
    assert (await read(view, fetch))["current_step"] == 22
    assert calls == 1  # progress and log events need no new trainer answer


async def test_a_status_event_or_a_new_subscription_asks_the_trainer_again() -> None:
    view = TrainingStatusView(60.0, clock=FakeClock())
    answers = [TrainerAnswer(IDLE), answer_running(last_seq=1)]

    async def fetch() -> TrainerAnswer:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    assert (await read(view, fetch))["status"] == "idle"
    view.on_event(ws_event(1, job_id="train_other"))  # progress of a job the answer does not name
    assert (await read(view, fetch))["status"] == "idle"
    view.on_event(ws_event(1, kind="status", message="Training started"))
    assert (await read(view, fetch))["job_id"] == "train_1"
    view.on_event(ws_event(2, kind="status", status="completed", progress=100.0, message="Done"))
    status = await read(view, fetch)
    assert (status["status"], status["progress"], status["message"]) == ("completed", 100.0, "Done")
    before = view.answers.stats.fetches
    view.on_gap()
    await read(view, fetch)
    assert view.answers.stats.fetches == before + 1


def test_model_listings_forget_on_a_terminal_event_only() -> None:
    listings = ModelListings(60.0)
    for kind, status, forgets in (
        ("progress", "running", False),
        ("status", "running", False),
        ("status", "completed", True),
        ("status", "error", True),
        ("status", "stopped", True),
    ):
        before = listings.stats.invalidations
        listings.on_event(ws_event(1, kind=kind, status=status))
        assert (listings.stats.invalidations > before) is forgets, (kind, status)


# --- through the gateway, with the fakes -------------------------------------------------------------------


async def wait_for(condition: Any) -> None:
    """Yields to the event loop until condition() holds (the test's timeout bounds it)."""
    while not condition():  # noqa: ASYNC110 - a counter of the cache, no event to wait on
        await asyncio.sleep(0.005)


async def test_concurrent_status_reads_make_one_trainer_call(fakes: FakeServices) -> None:
    fakes.trainer.job = running_job()
    fakes.trainer.status_gate = fakes.gate()
    async with running_client(settings_for(fakes, status_cache_s=60)) as (app, client):
        readers = [asyncio.create_task(client.get("/api/training_status")) for _ in range(16)]
        await wait_for(lambda: app.state.status_view.answers.stats.shared == 15)
        fakes.release(fakes.trainer.status_gate)
        responses = await asyncio.gather(*readers)
        assert {response.status_code for response in responses} == {200}
        assert {response.json()["current_step"] for response in responses} == {20}
        assert fakes.trainer.status_calls == 1
        assert (await client.get("/api/training_status")).json()["job_id"] == "train_1"
        assert fakes.trainer.status_calls == 1


async def test_concurrent_listing_reads_make_one_registry_call(fakes: FakeServices) -> None:
    fakes.registry.list_models_gate = fakes.gate()
    async with running_client(settings_for(fakes, models_cache_s=60)) as (app, client):
        readers = [asyncio.create_task(client.get("/api/models")) for _ in range(16)]
        await wait_for(lambda: app.state.model_listings.stats.shared == 15)
        fakes.release(fakes.registry.list_models_gate)
        responses = await asyncio.gather(*readers)
        assert {response.status_code for response in responses} == {200}
        assert {response.json()["total"] for response in responses} == {2}
        assert fakes.registry.list_models_calls == 1
        # Another query is another listing.
        filtered = await client.get("/api/models", params={"task": "summarization"})
        assert [model["task"] for model in filtered.json()["models"]] == ["summarization"]
        assert fakes.registry.list_models_calls == 2


async def test_a_delete_through_this_replica_shows_at_once(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    # The default bound is 1 s, but nothing here waits: only the invalidation can show the delete.
    assert (await client.get("/api/models")).json()["total"] == 2
    assert [m["id"] for m in (await client.get("/api/models/")).json()] == [1, 2]
    assert (await client.delete("/api/models/1")).status_code == 200
    assert [m["id"] for m in (await client.get("/api/models")).json()["models"]] == [2]
    assert [m["id"] for m in (await client.get("/api/models/")).json()] == [2]
    calls = fakes.registry.list_models_calls
    assert (await client.get("/api/models")).json()["total"] == 1
    assert fakes.registry.list_models_calls == calls  # and cached again


async def test_model_details_share_one_registry_call_and_a_delete_here_shows_at_once(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    calls = fakes.registry.get_model_calls
    for _ in range(3):
        response = await client.get("/api/models/1")
        assert response.status_code == 200 and response.json()["id"] == 1
    assert fakes.registry.get_model_calls == calls + 1
    # Another id (or the same model by another id) is another answer.
    assert (await client.get("/api/models/2")).json()["id"] == 2
    assert fakes.registry.get_model_calls == calls + 2
    assert (await client.delete("/api/models/1")).status_code == 200
    response = await client.get("/api/models/1")
    assert response.status_code == 404 and response.json()["detail"] == "Model 1 not found"


async def test_unknown_model_details_are_404_and_not_cached(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    assert (await client.get("/api/models/3")).status_code == 404
    fakes.registry.models[3] = make_model(3)  # registered since, through another replica
    response = await client.get("/api/models/3")
    assert response.status_code == 200 and response.json()["id"] == 3


async def test_model_details_change_behind_this_gateway_shows_within_the_bound(fakes: FakeServices) -> None:
    clock = FakeClock()
    async with running_client(settings_for(fakes, models_cache_s=1.0)) as (app, client):
        app.state.model_listings.clock = clock
        assert (await client.get("/api/models/1")).status_code == 200
        del fakes.registry.models[1]  # deleted through another replica
        clock.now += 0.4
        assert (await client.get("/api/models/1")).status_code == 200  # cached
        clock.now += 0.6
        assert (await client.get("/api/models/1")).status_code == 404


async def test_start_and_stop_through_this_replica_show_at_once(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/training_status")).json()["status"] == "idle"
    job_id = (await client.post("/api/start_training", json=START)).json()["job_id"]
    status = (await client.get("/api/training_status")).json()
    assert (status["status"], status["job_id"]) == ("training", job_id)
    assert (await client.post("/api/stop_training")).status_code == 200
    assert (await client.get("/api/training_status")).json()["status"] == "stopped"


async def test_another_replicas_change_shows_within_the_bound(fakes: FakeServices) -> None:
    clock = FakeClock()
    async with running_client(settings_for(fakes, status_cache_s=1.0, models_cache_s=1.0)) as (app, client):
        app.state.status_view.answers.clock = clock
        app.state.model_listings.clock = clock
        assert (await client.get("/api/training_status")).json()["status"] == "idle"
        assert (await client.get("/api/models")).json()["total"] == 2
        # Changed behind this gateway's back (another replica, no event seen).
        fakes.trainer.job = running_job()
        fakes.registry.models[3] = make_model(3)
        clock.now += 0.1
        assert (await client.get("/api/training_status")).json()["status"] == "idle"  # cached
        assert (await client.get("/api/models")).json()["total"] == 2
        clock.now += 0.9
        assert (await client.get("/api/training_status")).json()["status"] == "training"
        assert (await client.get("/api/models")).json()["total"] == 3


async def test_unknown_job_is_still_404_and_not_cached(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    for _ in range(2):
        response = await client.get("/api/training_status", params={"job_id": "train_nope"})
        assert response.status_code == 404
        assert response.json()["detail"] == "Training job train_nope not found"
    assert fakes.trainer.status_calls == 2


async def test_the_caches_can_be_turned_off(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes, status_cache_s=0, models_cache_s=0)) as (_, client):
        for _ in range(3):
            assert (await client.get("/api/training_status")).status_code == 200
            assert (await client.get("/api/models")).status_code == 200
            assert (await client.get("/api/models/1")).status_code == 200
        assert (fakes.trainer.status_calls, fakes.registry.list_models_calls) == (3, 3)
        assert fakes.registry.get_model_calls == 3
        fakes.trainer.job = running_job()
        assert (await client.get("/api/training_status")).json()["status"] == "training"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, fakes: FakeServices) -> None:
    monkeypatch.setenv("MODELFORGE_STATUS_CACHE_S", "0.25")
    monkeypatch.setenv("MODELFORGE_MODELS_CACHE_S", "0")
    app: FastAPI = create_app(settings_for(fakes))
    assert app.state.status_view.answers.max_age_s == 0.25
    assert not app.state.model_listings.enabled


# --- with a real nats-server: events over the cached answer ----------------------------------------------


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server() as server:
        yield server.url


def poll(client: TestClient, path: str, condition: Any, limit_s: float = 30.0) -> dict[str, Any]:
    """GETs path until condition(body) holds; fails after limit_s (a bound, not a timing goal)."""
    give_up = time.monotonic() + limit_s
    while True:
        body: dict[str, Any] = client.get(path).json()
        if condition(body):
            return body
        if time.monotonic() > give_up:
            raise AssertionError(f"{path} never met the condition: {body}")
        time.sleep(0.02)


def test_job_progress_and_completion_show_from_events(fakes: FakeServices, nats_url: str) -> None:
    fakes.trainer.job = running_job()  # train_1, step 20, last_seq 3
    # A bound far beyond the test: only the events can make the changes visible.
    app = create_app(settings_for(fakes, nats_url=nats_url, status_cache_s=60, models_cache_s=60))
    with TestClient(app) as client:
        wait_until_subscribed(client)
        assert client.get("/api/training_status").json()["current_step"] == 20
        assert client.get("/api/models").json()["total"] == 2
        calls = fakes.trainer.status_calls
        publish(
            nats_url,
            event(
                "train_1",
                4,
                "progress",
                status=common_pb2.JOB_STATUS_RUNNING,
                current_step=21,
                total_steps=100,
                progress=21.0,
                message="Training epoch 1/3 - Step 21/100",
            ),
        )
        body = poll(client, "/api/training_status", lambda b: b["current_step"] == 21)
        assert (body["status"], body["message"]) == ("training", "Training epoch 1/3 - Step 21/100")
        assert fakes.trainer.status_calls == calls  # a progress event needs no trainer call
        # The job completes: the trainer registered its model, then published the terminal event.
        fakes.registry.models[3] = make_model(3)
        publish(
            nats_url,
            event(
                "train_1",
                5,
                "status",
                status=common_pb2.JOB_STATUS_COMPLETED,
                progress=100.0,
                current_step=100,
                total_steps=100,
                message="Training completed successfully",
            ),
        )
        body = poll(client, "/api/training_status", lambda b: b["status"] == "completed")
        assert (body["progress"], body["current_step"]) == (100.0, 100)
        assert poll(client, "/api/models", lambda b: b["total"] == 3)["models"][-1]["id"] == 3


async def test_cached_polls_skip_the_router_but_not_the_key_check_or_the_metrics(fakes: FakeServices) -> None:
    key = "alice-secret-key-0123456789"
    auth = {"Authorization": f"Bearer {key}"}
    async with running_client(settings_for(fakes, api_keys=f"alice:{key}", models_cache_s=60)) as (app, client):
        before = (await client.get("/metrics")).text
        listings = app.state.model_listings
        routed = await client.get("/api/models", headers=auth)  # a miss: through the route, which fills the cache
        assert listings.stats.hits == 0
        cached = await client.get("/api/models", headers=auth)
        assert listings.stats.hits == 1 and fakes.registry.list_models_calls == 1
        assert (cached.status_code, cached.content) == (200, routed.content)
        assert cached.headers["content-type"] == routed.headers["content-type"] == "application/json"
        assert cached.headers["x-request-id"]
        assert (await client.get("/api/models")).status_code == 401  # no key: refused before the cache
        # With a query string the route answers (and validates) as always.
        assert (await client.get("/api/models", params={"limit": "0"}, headers=auth)).status_code == 400
        after = (await client.get("/metrics")).text
        labels = {"method": "GET", "route": "/api/models"}
        assert (
            sample(after, "modelforge_gateway_requests_total", labels | {"status": "200"})
            - sample(before, "modelforge_gateway_requests_total", labels | {"status": "200"})
            == 2
        )


async def test_a_job_end_first_seen_in_the_trainers_answer_refreshes_the_listing(fakes: FakeServices) -> None:
    """The trainer can answer "completed" before its event reaches the gateway: a client that saw it
    then lists models and must find the one just registered."""
    async with running_client(settings_for(fakes, models_cache_s=60)) as (app, client):
        assert (await client.get("/api/models")).json()["total"] == 2
        finished = running_job()
        finished.status = common_pb2.JOB_STATUS_COMPLETED
        fakes.trainer.job = finished
        fakes.registry.models[3] = make_model(3)
        assert (await client.get("/api/training_status")).json()["status"] == "completed"
        assert (await client.get("/api/models")).json()["total"] == 3
        invalidations = app.state.model_listings.stats.invalidations
        app.state.status_view.invalidate()
        assert (await client.get("/api/training_status")).json()["status"] == "completed"
        assert app.state.model_listings.stats.invalidations == invalidations  # once per job


async def test_a_job_end_told_by_any_route_refreshes_the_listing(fakes: FakeServices) -> None:
    """/api/jobs/{id} asks the trainer too: once it said "completed", the new model is listed."""
    async with running_client(settings_for(fakes, models_cache_s=60)) as (_, client):
        assert (await client.get("/api/models")).json()["total"] == 2
        finished = running_job()
        finished.status = common_pb2.JOB_STATUS_COMPLETED
        fakes.trainer.job = finished
        fakes.registry.models[3] = make_model(3)
        assert (await client.get(f"/api/jobs/{finished.job_id}")).json()["status"] == "completed"
        assert (await client.get("/api/models")).json()["total"] == 3
