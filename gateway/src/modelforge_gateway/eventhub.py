"""Training events from NATS, fanned out to every WebSocket client of this process.

One subscription per gateway process feeds an EventHub; each socket reads its own bounded queue,
so a slow client never blocks the others: when its queue overflows it is dropped (and closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from modelforge.v1 import events_pb2
from modelforge_common.nats import TRAINING_STREAM, connect, ensure_training_stream, training_wildcard
from modelforge_gateway.common.job_records import event_fields
from modelforge_gateway.metrics import EVENTS_FANNED_OUT

log = logging.getLogger(__name__)

Event = dict[str, Any]


class SharedEvent(dict[str, Any]):
    """An event as the hub hands it to every subscriber: one object for all of them, so its JSON
    text is rendered once (by the first socket that sends it), not once per socket."""

    __slots__ = ("_text",)

    def text(self) -> str:
        try:
            return self._text
        except AttributeError:
            self._text: str = encode_event(self)
            return self._text


def encode_event(event: Event) -> str:
    """The JSON text of one event on the wire (compact, as starlette's send_json writes it)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def event_text(event: Event) -> str:
    return event.text() if isinstance(event, SharedEvent) else encode_event(event)


@dataclass(eq=False)
class Subscriber:
    """One socket's view of the feed. A None in the queue means "stop": see `dropped`."""

    queue: asyncio.Queue[Event | None]
    job_id: str | None = None
    dropped: bool = False  # True when removed for falling behind, False when the hub closed

    def wants(self, event: Event) -> bool:
        return not self.job_id or event.get("job_id") == self.job_id


@dataclass
class EventHub:
    queue_size: int = 256
    _subscribers: set[Subscriber] = field(default_factory=set)

    def subscribe(self, job_id: str | None = None) -> Subscriber:
        subscriber = Subscriber(asyncio.Queue(maxsize=self.queue_size), job_id or None)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def publish(self, event: Event) -> None:
        event = event if isinstance(event, SharedEvent) else SharedEvent(event)
        delivered = 0
        for subscriber in list(self._subscribers):
            if not subscriber.wants(event):
                continue
            try:
                subscriber.queue.put_nowait(event)
                delivered += 1
            except asyncio.QueueFull:
                log.warning("dropping a WebSocket client that fell %d events behind", self.queue_size)
                subscriber.dropped = True
                self._stop(subscriber)
        if delivered:
            EVENTS_FANNED_OUT.inc(delivered)

    def close(self) -> None:
        for subscriber in list(self._subscribers):
            self._stop(subscriber)

    def _stop(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(None)

    def __len__(self) -> int:
        return len(self._subscribers)


class EventObserver(Protocol):
    """Reads kept up to date by the feed (readcache): each event as it arrives, and each new
    subscription, after which events may have been missed."""

    def on_event(self, event: Event) -> None: ...

    def on_gap(self) -> None: ...


class TrainingEventFeed:
    """Connects to NATS (retrying until it can), subscribes once to modelforge.training.*.*
    through a JetStream ordered consumer (core NATS when JetStream is off) and publishes every
    decoded TrainingEvent to the hub.

    nats-py retries a lost connection `reconnect_attempts` times, then closes the client; this feed
    then connects (and subscribes) afresh, for as long as it runs. Bounded attempts keep each
    connect call finite, so shutdown never waits on a connect loop that cannot be cancelled.
    """

    def __init__(
        self,
        url: str,
        hub: EventHub,
        *,
        name: str = "modelforge-gateway",
        check_s: float = 2.0,
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
        reconnect_attempts: int = 5,
        observers: Sequence[EventObserver] = (),
    ) -> None:
        self.url = url
        self.hub = hub
        self.observers = tuple(observers)
        self.name = name
        self.check_s = check_s
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.reconnect_attempts = reconnect_attempts
        self.mode = ""  # "jetstream" | "core" once subscribed
        self._nc: Client | None = None
        self._sub: Subscription | None = None
        # Stream sequence the subscription started at: an ordered consumer that resets before its
        # first message restarts at sequence 1, and old events must not reach clients as new.
        self._first_stream_seq = 0
        self._last_stream_seq = 0  # highest stream sequence delivered
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.subscriptions = 0  # how many times this feed has subscribed (tests and logs read it)

    @property
    def connection(self) -> Client | None:
        """The live NATS connection (history reads borrow it), None while disconnected."""
        return self._nc

    def stopping(self) -> bool:
        # A call, not the attribute: close() flips it while run() awaits, which a type checker's
        # narrowing of `self._stopping` does not see.
        return self._stopping

    @property
    def ready(self) -> bool:
        return self._nc is not None and self._nc.is_connected and self._sub is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="nats-training-feed")

    async def run(self) -> None:
        backoff_s = self.retry_s
        while not self.stopping():
            try:
                nc = await connect(self.url, self.name, max_reconnect_attempts=self.reconnect_attempts)
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.warning("NATS at %s not reachable, retrying in %.0fs: %s", self.url, backoff_s, exc)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, self.max_retry_s)
                continue
            backoff_s = self.retry_s
            if self.stopping():  # close() may have been called while connecting
                await nc.close()
                return
            log.info("connected to NATS at %s", self.url)
            self._nc = nc
            await self._follow(nc)
            self._nc, self._sub, self.mode = None, None, ""

    async def _follow(self, nc: Client) -> None:
        """Keeps one subscription alive on this connection until the client closes."""
        while not nc.is_closed:
            if self._sub is None and nc.is_connected:
                try:
                    await self._subscribe(nc)
                except (TimeoutError, nats.errors.Error, OSError) as exc:
                    log.warning("subscribing to training events failed, retrying: %s", exc)
            elif self.mode == "jetstream" and nc.is_connected:
                await self._check_consumer(nc)
            await asyncio.sleep(self.check_s)
        log.warning("NATS connection closed; connecting again")

    async def _subscribe(self, nc: Client) -> None:
        subject = training_wildcard()
        try:
            await ensure_training_stream(nc)
            js = nc.jetstream()
            info = await js.stream_info(TRAINING_STREAM)
            if 0 < self._last_stream_seq <= info.state.last_seq:
                # Subscribing again on the same stream (our consumer was lost, e.g. nats-py failed
                # to recreate it after a reset): go on after the last event delivered, so the
                # events published meanwhile still reach the sockets, once.
                self._first_stream_seq = self._last_stream_seq + 1
                policy = DeliverPolicy.BY_START_SEQUENCE
                config: ConsumerConfig | None = ConsumerConfig(opt_start_seq=self._first_stream_seq)
            else:
                # First subscription, or a stream that was recreated and numbers from 1 again.
                self._first_stream_seq = info.state.last_seq + 1
                self._last_stream_seq = 0
                policy, config = DeliverPolicy.NEW, None
            self._sub = await js.subscribe(
                subject,
                stream=TRAINING_STREAM,
                cb=self._on_message,
                ordered_consumer=True,
                deliver_policy=policy,
                config=config,
            )
            self.mode = "jetstream"
        except nats.js.errors.Error as exc:
            log.warning("JetStream unavailable (%s); subscribing with core NATS", exc)
            self._sub = await nc.subscribe(subject, cb=self._on_message)
            self.mode = "core"
        self.subscriptions += 1
        log.info("subscribed to %s (%s)", subject, self.mode)
        for observer in self.observers:
            observer.on_gap()

    async def _check_consumer(self, nc: Client) -> None:
        """Subscribes again when a NATS server restarted without its store: our consumer is gone,
        or the stream was recreated and numbers its messages from 1 again (an ordered consumer
        would otherwise wait, silently, for a sequence number the new stream has not reached)."""
        sub = self._sub
        if not isinstance(sub, nats.js.JetStreamContext.PushSubscription):
            return
        try:
            await sub.consumer_info()
            info = await nc.jetstream().stream_info(TRAINING_STREAM)
            reset = info.state.last_seq < max(self._first_stream_seq - 1, self._last_stream_seq)
        except nats.js.errors.NotFoundError:
            reset = True
        except (TimeoutError, nats.errors.Error) as exc:
            log.debug("consumer check failed: %s", exc)
            return
        if reset:
            log.warning("training-event consumer or stream was lost; subscribing again")
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        if self.mode == "jetstream":
            try:
                stream_seq = msg.metadata.sequence.stream
            except nats.errors.NotJSMessageError:
                return
            if stream_seq < self._first_stream_seq:
                return
            self._last_stream_seq = max(self._last_stream_seq, stream_seq)
        try:
            event = events_pb2.TrainingEvent.FromString(msg.data)
        except DecodeError:
            log.warning("ignoring an undecodable message on %s", msg.subject)
            return
        # One shared object for every observer and socket: its JSON text is rendered once.
        rendered = SharedEvent(event_fields(event))
        for observer in self.observers:
            try:
                observer.on_event(rendered)
            except Exception:  # a cache's bug must not stop the fan-out
                log.exception("event observer %r failed", observer)
        self.hub.publish(rendered)

    async def close(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        self.hub.close()
        if self._task is not None:
            # nats-py swallows a cancellation at some points of a connect attempt: cancel again
            # until the task ends (each attempt is bounded anyway).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while not self._task.done() and loop.time() < deadline:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.05)
            if not self._task.done():
                log.warning("NATS feed did not stop within %.1fs", timeout_s)
        nc = self._nc
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), timeout_s)
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.warning("NATS drain failed: %s", exc)
                await nc.close()
