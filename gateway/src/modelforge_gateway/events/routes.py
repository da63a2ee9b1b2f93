"""Training events. GET /api/jobs/{id}/events: a job's stored events; .../events/stream: the same
as Server-Sent Events followed by the live ones.

WS /ws/training: the current status first, then every training event as one JSON object.

Messages: type (status | progress | metric | log), job_id, seq, timestamp, status, progress,
current_epoch, total_epochs, current_step, total_steps, loss, learning_rate, message, error,
metrics, model_id, epoch. When nothing happened for `ws_heartbeat_s`, a {"type": "heartbeat",
"timestamp"} message keeps proxies from closing the idle connection. Optional query `job_id`
narrows the events to one job; with `since=N` as well, the job's stored events with seq > N
(from the TRAINING stream) follow the initial status before the live ones, each seq once, so a
client that reconnects (to any gateway replica) misses nothing and sees nothing twice. A client
that falls `ws_queue_size` events behind is closed with code 1008 so it cannot hold memory or slow
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Header, Path, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.status import WS_1001_GOING_AWAY, WS_1008_POLICY_VIOLATION, WS_1013_TRY_AGAIN_LATER

from modelforge_gateway.common.job_records import status_event_fields
from modelforge_gateway.deps import EventFeedDep, EventHubDep, Rpc, SettingsDep, TrainerStub
from modelforge_gateway.errors import ApiError
from modelforge_gateway.eventhub import Subscriber, event_text
from modelforge_gateway.events.convert import LAST_EVENT_ID, last_event_seq, sse_text
from modelforge_gateway.events.models import JobEvent, JobEventsResponse
from modelforge_gateway.replay import JOB_ID, HistoryUnavailable, read_history, replay_then_follow
from modelforge_gateway.upstream.jobs import checked_job_id, fetch_job, trainer_status

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"])
# The job event endpoints are documented with the jobs (their operation ids say so).
job_events_router = APIRouter(tags=["jobs"])

JobId = Annotated[str, Path(max_length=128)]
Since = Annotated[int, Query(ge=0, le=2**53, description="Only events with a larger seq")]


async def _listen(websocket: WebSocket) -> None:
    """Returns when the client goes away; what it sends is ignored."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _pump(websocket: WebSocket, events: AsyncIterator[dict[str, Any]], subscriber: Subscriber) -> int:
    """Sends the replayed and live events until the hub stops this subscriber; returns the close code."""
    async for event in events:
        await websocket.send_text(event_text(event))
    return WS_1008_POLICY_VIOLATION if subscriber.dropped else WS_1001_GOING_AWAY


@router.websocket("/ws/training")
async def training_events(
    websocket: WebSocket,
    hub: EventHubDep,
    trainer: TrainerStub,
    rpc: Rpc,
    settings: SettingsDep,
    feed: EventFeedDep,
    job_id: str = Query("", max_length=200),
    since: int | None = Query(None, ge=0, le=2**53),
) -> None:
    await websocket.accept()
    if since is not None and not JOB_ID.match(job_id):
        await websocket.close(WS_1008_POLICY_VIOLATION, "since needs a valid job_id")
        return
    # Subscribe before asking for the status (and reading the history) so no event falls between.
    subscriber = hub.subscribe(job_id or None)
    try:
        try:
            reply = await trainer_status(trainer, rpc, job_id)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                await websocket.close(WS_1008_POLICY_VIOLATION, f"Training job {job_id} not found")
            else:
                log.warning("no initial status for a WebSocket client: %s %s", exc.code().name, exc.details())
                await websocket.close(WS_1013_TRY_AGAIN_LATER, "trainer service unavailable")
            return
        initial: dict[str, Any] = dict(status_event_fields(reply.has_job, reply.job))
        history: list[dict[str, Any]] = []
        if since is not None:
            try:
                history = await read_history(feed.connection, job_id, since)
            except HistoryUnavailable as exc:
                log.warning("no event history for a WebSocket client: %s", exc)
                await websocket.close(WS_1013_TRY_AGAIN_LATER, "event history unavailable, retry")
                return
        events = replay_then_follow(subscriber, initial, history, settings.ws_heartbeat_s, since=since)
        pump = asyncio.create_task(_pump(websocket, events, subscriber))
        listen = asyncio.create_task(_listen(websocket))
        done, pending = await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
        if pump in done and pump.exception() is None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await websocket.close(
                    pump.result(), "client too slow" if subscriber.dropped else "server shutting down"
                )
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(subscriber)


@job_events_router.get(
    "/api/jobs/{job_id}/events",
    response_model=JobEventsResponse,
    responses={404: {"description": "Unknown job"}, 503: {"description": "The event store is unreachable"}},
)
async def job_events(
    job_id: JobId, trainer: TrainerStub, rpc: Rpc, feed: EventFeedDep, since: Since = 0
) -> JobEventsResponse:
    """The job's stored events with seq > since, in order."""
    await fetch_job(trainer, rpc, job_id)
    try:
        events = await read_history(feed.connection, job_id, since)
    except HistoryUnavailable as exc:
        raise ApiError(503, f"Event history unavailable: {exc}") from exc
    return JobEventsResponse(job_id=job_id, events=[JobEvent.model_validate(event) for event in events])


@job_events_router.get(
    "/api/jobs/{job_id}/events/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events, one per job event"},
        404: {"description": "Unknown job"},
        503: {"description": "The event store is unreachable"},
    },
)
async def job_event_stream(
    job_id: JobId,
    trainer: TrainerStub,
    rpc: Rpc,
    hub: EventHubDep,
    feed: EventFeedDep,
    settings: SettingsDep,
    since: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    last_event_id: Annotated[str, Header(pattern=LAST_EVENT_ID)] = "",
) -> StreamingResponse:
    """Server-Sent Events for clients that cannot use WebSocket: the current status, every stored
    event after `since` (or the `Last-Event-ID` header a reconnecting EventSource sends), then live
    events; each event's `id` is its seq. The stream ends after the job's terminal status."""
    if since is None:
        since = last_event_seq(last_event_id)
    subscriber = hub.subscribe(checked_job_id(job_id))
    try:
        initial = dict(status_event_fields(True, await fetch_job(trainer, rpc, job_id)))
        try:
            history = await read_history(feed.connection, job_id, since)
        except HistoryUnavailable as exc:
            raise ApiError(503, f"Event history unavailable: {exc}") from exc
    except BaseException:
        hub.unsubscribe(subscriber)
        raise

    async def body() -> AsyncIterator[str]:
        try:
            events = replay_then_follow(
                subscriber, initial, history, settings.ws_heartbeat_s, stop_after_terminal=True, since=since
            )
            async for event in events:
                yield sse_text(event)
        finally:
            hub.unsubscribe(subscriber)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
