"""Short-lived, per-replica answers for the hot reads: GET /api/training_status, GET /api/models and
GET /api/models/{id}.

Under load every one of these reads cost a gRPC round trip (and the trainer's status two registry
calls behind it): about 3.8 ms of CPU across the stack per request, against 0.09 ms for a bare app
serving the same JSON (bench/ANALYSIS.md, Load). Here:

- `SingleFlightCache`: concurrent identical reads share one upstream call (single-flight), and its
  answer is reused for at most `max_age_s`, counted from when that call started, so an answer is
  never older than the bound. From half the bound on, the next read starts a refresh in the
  background and is still answered from the cache; past the bound, reads wait for a fresh answer.
  `invalidate()` drops every answer and makes calls in flight unable to store theirs, so a read
  that starts after it never sees what was cached before it. Errors are never cached. With
  `max_age_s <= 0` it is off: every read makes its own call.
- `TrainingStatusView`: the status answer of the trainer (cached as above) with the training events
  this gateway receives over NATS laid over it: an event newer (higher `seq`) than the trainer's
  answer for the same job replaces its fields at once. A status event (a job queued, started,
  stopping, registering or finished) invalidates the cached answers, since it can change which job
  the status means; so does a fresh NATS subscription (events may have been missed meanwhile).

What invalidates, besides the bound: this replica's own writes (every non-GET request, see
middleware.InvalidateOnWriteMiddleware) and, for the model listing, a job reaching a terminal
state (a model was registered). Other replicas' writes show within the bound.

Plain Python (no grpc, no fastapi): the routes pass the upstream call in as `fetch`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

V = TypeVar("V")

Fields = dict[str, Any]


@dataclass
class _Entry(Generic[V]):
    value: V
    started_at: float  # when the call that produced it started: its age is counted from there
    generation: int


@dataclass
class CacheStats:
    fetches: int = 0  # upstream calls made
    hits: int = 0  # reads answered from the cache
    shared: int = 0  # reads that waited on another read's call
    invalidations: int = 0


class SingleFlightCache(Generic[V]):
    """Answers by key, each at most `max_age_s` old, one upstream call per key at a time."""

    def __init__(
        self,
        max_age_s: float,
        *,
        capacity: int = 256,
        clock: Callable[[], float] = time.monotonic,
        name: str = "cache",
    ) -> None:
        self.max_age_s = max_age_s
        self.capacity = capacity
        self.clock = clock
        self.name = name
        self.stats = CacheStats()
        self._generation = 0
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self._flights: dict[Hashable, tuple[int, asyncio.Task[V]]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0

    def invalidate(self) -> None:
        """Forgets every answer; calls in flight still answer their waiters but store nothing."""
        self._generation += 1
        self._entries.clear()
        self._flights.clear()
        self.stats.invalidations += 1

    def peek(self, key: Hashable) -> V | None:
        """The cached answer while it is less than half the bound old (no refresh due yet), else None:
        the caller then goes through get(), which refreshes."""
        entry = self._entries.get(key)
        if entry is None or self.clock() - entry.started_at >= self.max_age_s / 2:
            return None
        self.stats.hits += 1
        return entry.value

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[V]]) -> V:
        if not self.enabled:
            self.stats.fetches += 1
            return await fetch()
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry.started_at < self.max_age_s:
            self.stats.hits += 1
            if now - entry.started_at >= self.max_age_s / 2 and key not in self._flights:
                # Refresh ahead, so reads do not all wait when the answer reaches the bound.
                self._start_flight(key, fetch).add_done_callback(_consume_error)
            return entry.value
        flight = self._flights.get(key)
        if flight is not None and flight[0] == self._generation:
            self.stats.shared += 1
            task = flight[1]
        else:
            task = self._start_flight(key, fetch)
        # A waiter that goes away (its client disconnected) must not cancel the others' call.
        return await asyncio.shield(task)

    def _start_flight(self, key: Hashable, fetch: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        generation = self._generation
        started_at = self.clock()
        self.stats.fetches += 1

        async def call() -> V:
            try:
                value = await fetch()
            finally:
                if self._flights.get(key, (None,))[0] == generation:
                    del self._flights[key]
            if generation == self._generation:
                self._entries[key] = _Entry(value, started_at, generation)
                self._entries.move_to_end(key)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
            return value

        task = asyncio.ensure_future(call())
        self._flights[key] = (generation, task)
        return task


def _consume_error(task: asyncio.Task[Any]) -> None:
    """A refresh nobody waits for: its failure is logged, the cached answer stays until its bound."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.debug("background refresh failed: %s", exc)


# --- /api/training_status --------------------------------------------------------------------------

ACTIVE_WORDS = frozenset({"queued", "training", "running", "registering"})
TERMINAL_WORDS = frozenset({"completed", "error", "stopped"})
# Fields of /api/training_status an event carries (the event's "status" word is mapped separately).
_EVENT_FIELDS = ("progress", "current_epoch", "total_epochs", "current_step", "total_steps", "loss", "learning_rate")


@dataclass(frozen=True)
class TrainerAnswer:
    """What the trainer said: the /api/training_status fields and the seq of the job's last event."""

    fields: Fields
    last_seq: int = 0
    rendered: dict[int, bytes] = field(default_factory=dict, compare=False)  # by overlay seq (0: none)

    @property
    def job_id(self) -> str | None:
        job_id = self.fields.get("job_id")
        return job_id if isinstance(job_id, str) and job_id else None


@dataclass(frozen=True)
class _EventState:
    seq: int
    fields: Fields
    # False for log and metric events: their message is a log line, not the job's state line.
    sets_message: bool


def status_word(event_status: str | None) -> str | None:
    """An event's status word as /api/training_status writes it ("training" for running)."""
    if event_status is None:
        return None
    return "training" if event_status == "running" else event_status


def render_json(fields: Fields) -> bytes:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


class TrainingStatusView:
    """/api/training_status answers: the trainer's (through a SingleFlightCache) plus newer events."""

    def __init__(
        self,
        max_age_s: float,
        *,
        job_capacity: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        on_job_ended: Callable[[], None] = lambda: None,
    ) -> None:
        self.answers: SingleFlightCache[TrainerAnswer] = SingleFlightCache(max_age_s, clock=clock, name="status")
        self.job_capacity = job_capacity
        # Called when a trainer answer (to any route) is the first news here of a job's end: the
        # trainer can answer "completed" a moment before its event reaches this gateway, and a client
        # that saw it must then find the new model in the listing (ModelListings.invalidate).
        self.on_job_ended = on_job_ended
        self._events: OrderedDict[str, _EventState] = OrderedDict()
        self._ended: OrderedDict[str, None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.answers.enabled

    def invalidate(self) -> None:
        self.answers.invalidate()

    def on_gap(self) -> None:
        """Events may have been missed (a new NATS subscription): ask the trainer again."""
        self.answers.invalidate()

    def on_event(self, event: Fields) -> None:
        """One training event as /ws/training sends it (convert.event_json)."""
        job_id = event.get("job_id")
        seq = event.get("seq")
        if not isinstance(job_id, str) or not job_id or not isinstance(seq, int):
            return
        kind = event.get("type")
        known = self._events.get(job_id)
        if known is None or seq > known.seq:
            fields: Fields = {name: event.get(name) for name in _EVENT_FIELDS}
            fields["status"] = status_word(event.get("status"))
            fields["job_id"] = job_id
            fields["error"] = event.get("error")
            sets_message = kind in ("status", "progress")
            fields["message"] = event.get("message", "") if sets_message else None
            if fields["status"] is None and known is not None:
                fields["status"] = known.fields["status"]
            if not sets_message and known is not None:
                fields["message"] = known.fields["message"]
                sets_message = known.sets_message
            self._events[job_id] = _EventState(seq, fields, sets_message)
            self._events.move_to_end(job_id)
            while len(self._events) > self.job_capacity:
                self._events.popitem(last=False)
        if kind == "status":
            # A job queued, started or ended: which job "the current one" is may have changed.
            self.answers.invalidate()
            if event.get("status") in TERMINAL_WORDS:
                self._ended[job_id] = None  # ModelListings saw this event too

    async def body(self, job_id: str, fetch: Callable[[], Awaitable[TrainerAnswer]]) -> bytes:
        """The JSON body of GET /api/training_status[?job_id=...]."""
        return self._render(await self.answers.get(job_id, fetch))

    def note_job(self, job_id: str, status: str) -> None:
        """A job's status as the trainer just told some route (clients.watching_status)."""
        if job_id and status in TERMINAL_WORDS:
            self._note_end(job_id)

    def _note_end(self, job_id: str) -> None:
        if job_id in self._ended:
            return
        self._ended[job_id] = None
        while len(self._ended) > self.job_capacity:
            self._ended.popitem(last=False)
        self.on_job_ended()

    def cached_body(self, job_id: str) -> bytes | None:
        """The body when an answer is cached and no refresh is due (see SingleFlightCache.peek)."""
        answer = self.answers.peek(job_id)
        return None if answer is None else self._render(answer)

    def _render(self, answer: TrainerAnswer) -> bytes:
        overlay = self._events.get(answer.job_id) if answer.job_id else None
        if overlay is None or overlay.seq <= answer.last_seq or overlay.fields["status"] is None:
            overlay_seq = 0
        else:
            overlay_seq = overlay.seq
        rendered = answer.rendered.get(overlay_seq)
        if rendered is None:
            fields = answer.fields
            if overlay is not None and overlay_seq:
                fields = {**fields, **overlay.fields}
                if overlay.fields["message"] is None:
                    # Only log or metric events seen since: the trainer's state line stands.
                    fields["message"] = answer.fields.get("message", "")
            rendered = render_json(fields)
            if self.enabled:
                # Two entries at most: the answer as is and with the latest event over it.
                if len(answer.rendered) > 1:
                    answer.rendered.clear()
                answer.rendered[overlay_seq] = rendered
        return rendered


def is_terminal_event(event: Fields) -> bool:
    return event.get("type") == "status" and event.get("status") in TERMINAL_WORDS


# --- /api/models -----------------------------------------------------------------------------------


def listing_key(
    task: str | None = None,
    base_model: str | None = None,
    strategy: str | None = None,
    provider: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[object, ...]:
    """The cache key of GET /api/models with these query parameters (None: not given)."""
    return ("envelope", task, base_model, strategy, provider, status, limit, offset)


def bare_listing_key(task: str = "") -> tuple[object, ...]:
    """The cache key of GET /api/models/ (task "") and GET /api/models/task/{task}."""
    return ("bare", task)


def details_key(model_id: str) -> tuple[object, ...]:
    """The cache key of GET /api/models/{model_id} (the id as the path gives it: numeric or model_id)."""
    return ("details", model_id)


class ModelListings(SingleFlightCache[bytes]):
    """Rendered model listings by query, and model details by id. A job that finished may have registered a model: its
    terminal event invalidates them, and so does a fresh NATS subscription (one may have been missed)."""

    def __init__(self, max_age_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_age_s, clock=clock, name="models")

    def on_event(self, event: Fields) -> None:
        if is_terminal_event(event):
            self.invalidate()

    def on_gap(self) -> None:
        self.invalidate()


# --- model lookups (playground generate and stream) -------------------------------------------------


class ModelLookups(SingleFlightCache[V]):
    """Registered models by the id a generate request names (numeric id or model_id). Every
    generate and stream request looked its model up in the registry, ~4 ms of gateway and registry
    CPU that staggered concurrent arrivals (issue 17); here concurrent requests for one model share
    one lookup, reused for at most the bound. Not invalidated by every write (a generate is a POST):
    a delete of a model through this replica invalidates it (the routes that delete call
    invalidate()); other replicas' deletes show within the bound. Lookups that fail are not kept."""

    def __init__(self, max_age_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_age_s, clock=clock, name="model_lookups")
