"""The jobs API beside the seed endpoints: queue a job, list, read, cancel, and its event history
(as JSON, or as a Server-Sent Events stream with the WebSocket's replay semantics)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse

from modelforge.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from modelforge_gateway.clients import CallOptions
from modelforge_gateway.convert import job_json, status_event_json
from modelforge_gateway.deps import EventFeedDep, EventHubDep, Owner, RegistryStub, Rpc, SettingsDep, TrainerStub
from modelforge_gateway.errors import ApiError, invalid, rpc_messages
from modelforge_gateway.events import event_text
from modelforge_gateway.replay import JOB_ID, HistoryUnavailable, read_history, replay_then_follow
from modelforge_gateway.routes.models import check_dataset_digest
from modelforge_gateway.schemas import (
    JobEventsResponse,
    JobListResponse,
    JobResponse,
    JobStatusWord,
    StartTrainingRequest,
)

router = APIRouter(tags=["jobs"])

STATUS_VALUES: dict[str, int] = {
    "queued": common_pb2.JOB_STATUS_QUEUED,
    "running": common_pb2.JOB_STATUS_RUNNING,
    "completed": common_pb2.JOB_STATUS_COMPLETED,
    "error": common_pb2.JOB_STATUS_ERROR,
    "stopped": common_pb2.JOB_STATUS_STOPPED,
    "registering": common_pb2.JOB_STATUS_REGISTERING,
}
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,200}$"  # printable ASCII, no spaces

JobId = Annotated[str, Path(max_length=128)]
Since = Annotated[int, Query(ge=0, le=2**53, description="Only events with a larger seq")]


def _checked(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise ApiError(404, f"Training job {job_id} not found")
    return job_id


async def _job(trainer: trainer_pb2_grpc.TrainerServiceStub, rpc: CallOptions, job_id: str) -> common_pb2.TrainingJob:
    with rpc_messages({grpc.StatusCode.NOT_FOUND: f"Training job {job_id} not found"}):
        reply = await trainer.GetTrainingStatus(
            trainer_pb2.GetTrainingStatusRequest(job_id=_checked(job_id)), **rpc.read
        )
    return reply.job


@router.post(
    "/api/jobs",
    response_model=JobResponse,
    status_code=201,
    responses={200: {"model": JobResponse, "description": "The job this Idempotency-Key created before"}},
)
async def submit_job(
    body: StartTrainingRequest,
    trainer: TrainerStub,
    registry: RegistryStub,
    rpc: Rpc,
    owner: Owner,
    response: Response,
    idempotency_key: Annotated[str | None, Header(pattern=IDEMPOTENCY_KEY)] = None,
) -> dict[str, Any]:
    """Queues a training job (any trainer replica with a free slot runs it). Repeating a request
    with the same `Idempotency-Key` header returns the job it created first, with 200."""
    await check_dataset_digest(registry, rpc, body.dataset, body.dataset_sha256)
    request = trainer_pb2.SubmitTrainingJobRequest(
        config=body.to_pb(body.task, body.model_name), idempotency_key=idempotency_key or "", owner=owner
    )
    reply = await trainer.SubmitTrainingJob(request, **rpc.write)
    if not reply.created:
        response.status_code = 200
    return job_json(reply.job)


@router.get("/api/jobs", response_model=JobListResponse)
async def list_jobs(
    trainer: TrainerStub,
    rpc: Rpc,
    status: Annotated[list[JobStatusWord] | None, Query(description="Only jobs in these states")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> dict[str, Any]:
    request = trainer_pb2.ListTrainingJobsRequest(
        statuses=[STATUS_VALUES[word] for word in status or []], limit=limit, offset=offset
    )
    reply = await trainer.ListTrainingJobs(request, **rpc.read)
    return {"jobs": [job_json(job) for job in reply.jobs], "total": reply.total}


@router.get("/api/jobs/{job_id}", response_model=JobResponse, responses={404: {"description": "Unknown job"}})
async def get_job(job_id: JobId, trainer: TrainerStub, rpc: Rpc) -> dict[str, Any]:
    return job_json(await _job(trainer, rpc, job_id))


@router.post(
    "/api/jobs/{job_id}/cancel",
    response_model=JobResponse,
    responses={404: {"description": "Unknown job"}, 409: {"description": "The job has already finished"}},
)
async def cancel_job(job_id: JobId, trainer: TrainerStub, rpc: Rpc) -> dict[str, Any]:
    """Cancels a queued job at once; a running one stops at its next step (saving a checkpoint)."""
    with rpc_messages({grpc.StatusCode.NOT_FOUND: f"Training job {job_id} not found"}):
        reply = await trainer.StopTraining(trainer_pb2.StopTrainingRequest(job_id=_checked(job_id)), **rpc.write)
    return job_json(reply.job)


@router.get(
    "/api/jobs/{job_id}/events",
    response_model=JobEventsResponse,
    responses={404: {"description": "Unknown job"}, 503: {"description": "The event store is unreachable"}},
)
async def job_events(job_id: JobId, trainer: TrainerStub, rpc: Rpc, feed: EventFeedDep, since: Since = 0) -> Any:
    """The job's stored events with seq > since, in order."""
    await _job(trainer, rpc, job_id)
    try:
        events = await read_history(feed.connection, job_id, since)
    except HistoryUnavailable as exc:
        raise ApiError(503, f"Event history unavailable: {exc}") from exc
    return {"job_id": job_id, "events": events}


# ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses. 15 digits keep
# every value below 2**53, the largest seq a JavaScript client holds exactly.
LAST_EVENT_ID = r"^[0-9]{0,15}$"
_LAST_EVENT_ID = re.compile(LAST_EVENT_ID)


def last_event_seq(header: str) -> int:
    """The seq in a reconnecting EventSource's Last-Event-ID header (0 when absent or empty)."""
    if not _LAST_EVENT_ID.fullmatch(header):
        raise invalid(["header", "last-event-id"], "must be a sequence number (up to 15 ASCII digits)")
    return int(header) if header else 0


def _sse(event: dict[str, Any]) -> str:
    seq = event.get("seq")
    head = f"id: {seq}\n" if seq else ""
    return f"{head}event: {event['type']}\ndata: {event_text(event)}\n\n"


@router.get(
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
    subscriber = hub.subscribe(_checked(job_id))
    try:
        initial = status_event_json(True, await _job(trainer, rpc, job_id))
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
                yield _sse(event)
        finally:
            hub.unsubscribe(subscriber)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
