"""The durable job queue over NATS JetStream: a work-queue stream (TRAINING_JOBS) that every trainer
replica pulls from through one shared durable consumer (`trainer`, the name KEDA scales on).

A message carries only a job id; the job itself is the registry's record. A replica fetches at most
as many messages as it has free slots and acknowledges one only when its job reached a terminal
state; while the job trains it sends in-progress acks, so a replica that dies leaves the message to
be redelivered after ack_wait. Stop requests for a job that runs on another replica travel on a
plain NATS subject every replica listens to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from modelforge.v1 import events_pb2
from modelforge_common.errors import Unavailable
from modelforge_common.nats import TRAINING_STREAM, training_subject

log = logging.getLogger(__name__)

JOBS_STREAM = "TRAINING_JOBS"
JOBS_SUBJECT = "modelforge.jobs.submit"
JOBS_CONSUMER = "trainer"
STOP_SUBJECT_PREFIX = "modelforge.jobs.stop"
# Request/reply: "does a live replica still run this job?" (answered by the one that does).
ALIVE_SUBJECT_PREFIX = "modelforge.jobs.alive"
EVENT_KINDS = ("status", "progress", "metric", "log")
# Seconds between two reads of the queue's depth (for the queue depth metric).
DEPTH_READ_INTERVAL_S = 5.0

Connect = Callable[[], Awaitable[Any]]


@dataclass
class Delivery:
    """One delivery of a queued job to this replica."""

    job_id: str
    redelivered: bool
    message: Any  # nats.aio.msg.Msg

    async def in_progress(self) -> None:
        with contextlib.suppress(Exception):  # NATS away: the next one (or the redelivery) covers it
            await self.message.in_progress()

    async def ack(self) -> bool:
        try:
            await self.message.ack()
            return True
        except Exception as exc:  # noqa: BLE001 - unacked: redelivered, and the record says it is done
            log.warning("could not acknowledge job %s: %r", self.job_id, exc)
            return False


# Called synchronously when a message arrives (so the slot counts as taken at once); the awaitable it
# returns handles the job until it is acknowledged.
Handler = Callable[[Delivery], Awaitable[None]]


class JetStreamJobQueue:
    def __init__(
        self,
        connect: Connect,
        *,
        ack_wait_s: float = 60.0,
        fetch_wait_s: float = 2.0,
        retry_s: float = 1.0,
    ) -> None:
        self._connect = connect
        self.ack_wait_s = ack_wait_s
        self._fetch_wait_s = fetch_wait_s
        self._retry_s = retry_s
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        # Jobs waiting in the queue (the consumer's pending messages), as last read.
        self.depth = 0

    async def _connection(self) -> Any:
        if self._nc is None or self._nc.is_closed:
            self._nc = await self._connect()
        return self._nc

    async def _declare(self, js: Any) -> None:
        stream = StreamConfig(
            name=JOBS_STREAM,
            subjects=[JOBS_SUBJECT],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
        try:
            await js.add_stream(stream)
        except nats.js.errors.BadRequestError:
            await js.update_stream(stream)
        consumer = ConsumerConfig(
            durable_name=JOBS_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,  # attempts are counted in the job record (MODELFORGE_JOB_MAX_ATTEMPTS)
            filter_subject=JOBS_SUBJECT,
        )
        try:
            await js.add_consumer(JOBS_STREAM, consumer)
        except nats.js.errors.BadRequestError as exc:  # exists with other settings (another version)
            log.warning("keeping the existing %s consumer: %s", JOBS_CONSUMER, exc)

    async def enqueue(self, job_id: str) -> None:
        """Stores the job's message (once per job id: a retried publish is deduplicated)."""
        try:
            nc = await asyncio.wait_for(self._connection(), 5)
            js = nc.jetstream()
            if not self._ready.is_set():
                await self._declare(js)
            await js.publish(JOBS_SUBJECT, job_id.encode(), timeout=5, headers={"Nats-Msg-Id": f"job:{job_id}"})
        except Exception as exc:
            log.warning("queueing job %s failed: %r", job_id, exc)
            raise Unavailable("The job queue (NATS) is unreachable") from exc

    async def request_stop(self, job_id: str) -> bool:
        """Asks whichever replica runs the job to stop it: True once that replica answered, False
        when none did (no live replica runs it)."""
        try:
            nc = await asyncio.wait_for(self._connection(), 5)
            await nc.request(f"{STOP_SUBJECT_PREFIX}.{job_id}", b"", timeout=2)
            return True
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return False
        except Exception as exc:
            log.warning("could not ask for job %s to stop: %r", job_id, exc)
            raise Unavailable(f"Could not reach the replica running {job_id} (the job queue is unreachable)") from exc

    async def running_elsewhere(self, job_id: str) -> bool:
        """True when a live replica answers that it runs the job (a redelivery that came only
        because its in-progress acks were lost, e.g. while NATS restarted)."""
        try:
            nc = await asyncio.wait_for(self._connection(), 5)
            await nc.request(f"{ALIVE_SUBJECT_PREFIX}.{job_id}", b"", timeout=2)
            return True
        except nats.errors.NoRespondersError:
            return False
        except nats.errors.TimeoutError:
            return False
        except Exception as exc:  # noqa: BLE001 - cannot tell: do not take it over now
            log.warning("could not ask whether job %s runs elsewhere: %r", job_id, exc)
            return True

    async def last_event_seq(self, job_id: str) -> int:
        """The highest seq stored in the TRAINING stream for the job (0 when none or unreadable), so
        a replica that takes a job over continues its sequence numbers."""
        try:
            nc = await asyncio.wait_for(self._connection(), 5)
            js = nc.jetstream()
        except Exception:  # noqa: BLE001
            return 0
        highest = 0
        for kind in EVENT_KINDS:
            try:
                stored = await js.get_last_msg(TRAINING_STREAM, training_subject(job_id, kind))
                highest = max(highest, events_pb2.TrainingEvent.FromString(stored.data).seq)
            except Exception:  # noqa: BLE001 - no event of that kind (or unreadable): skip it
                continue
        return highest

    def start(
        self,
        handler: Handler,
        free_slots: Callable[[], int],
        on_stop: Callable[[str], None],
        runs_here: Callable[[str], bool],
    ) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._consume(handler, free_slots, on_stop, runs_here), name="job-queue")

    async def _consume(
        self,
        handler: Handler,
        free_slots: Callable[[], int],
        on_stop: Callable[[str], None],
        runs_here: Callable[[str], bool],
    ) -> None:
        async def stop_requested(msg: Any) -> None:
            job_id = msg.subject.rsplit(".", 1)[-1]
            if runs_here(job_id):
                on_stop(job_id)
                if msg.reply:
                    await msg.respond(b"stopping")

        async def alive_asked(msg: Any) -> None:
            if runs_here(msg.subject.rsplit(".", 1)[-1]) and msg.reply:
                await msg.respond(b"running")

        listening_on: Any = None
        while True:
            try:
                nc = await self._connection()
                js = nc.jetstream()
                await self._declare(js)
                if listening_on is not nc:  # once per connection (nats-py renews it across reconnects)
                    await nc.subscribe(f"{STOP_SUBJECT_PREFIX}.*", cb=stop_requested)
                    await nc.subscribe(f"{ALIVE_SUBJECT_PREFIX}.*", cb=alive_asked)
                    listening_on = nc
                pull = await js.pull_subscribe_bind(durable=JOBS_CONSUMER, stream=JOBS_STREAM)
                self._ready.set()
                log.info("consuming jobs from %s (consumer %s)", JOBS_STREAM, JOBS_CONSUMER)
                await self._pull(pull, handler, free_slots)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - NATS away or the stream lost: set it up again
                self._ready.clear()
                log.warning("job queue unavailable, retrying: %r", exc)
                if self._nc is not None and self._nc.is_closed:
                    self._nc = None
                await asyncio.sleep(self._retry_s)

    async def _pull(self, pull: Any, handler: Handler, free_slots: Callable[[], int]) -> None:
        depth_read_at = 0.0
        while True:
            if time.monotonic() - depth_read_at >= DEPTH_READ_INTERVAL_S:
                depth_read_at = time.monotonic()
                with contextlib.suppress(Exception):  # a metric only: the next round tries again
                    self.depth = int((await pull.consumer_info()).num_pending)
            free = free_slots()
            if free <= 0:
                await asyncio.sleep(0.2)
                continue
            try:
                messages = await pull.fetch(free, timeout=self._fetch_wait_s)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                job_id = message.data.decode(errors="replace")
                delivery = Delivery(job_id, message.metadata.num_delivered > 1, message)
                task = asyncio.ensure_future(handler(delivery))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 5)
            self._nc = None
