"""Keeps the registry's job records in step with the events this replica publishes.

An EventSink in front of the publisher: every event goes on to NATS unchanged, and the job's record
(status, progress, last_seq, checkpoint, model_id, error, times) is written to registry-svc by one
background task, in order. Status changes are written at once; progress at most every
progress_interval_s per job. A write that fails for want of the registry is kept (merged with later
changes) and retried, so the record catches up when the registry is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from modelforge_common.errors import ModelForgeError, Unavailable
from modelforge_trainer.background import start_detached
from modelforge_trainer.jobs import EventKind, Job, JobEvent
from modelforge_trainer.ports import JobStore
from modelforge_trainer.publisher import EventSink
from modelforge_training.checkpoints import latest_checkpoint

log = logging.getLogger(__name__)


class RecordingStoreSink:
    def __init__(
        self,
        inner: EventSink,
        store: JobStore,
        find_job: Callable[[str], Job | None],
        checkpoint_dir: Callable[[str], Any],
        *,
        replica: str,
        progress_interval_s: float = 2.0,
        retry_s: float = 1.0,
    ) -> None:
        self.inner = inner
        self.store = store
        self.find_job = find_job
        self.checkpoint_dir = checkpoint_dir
        self.replica = replica
        self.progress_interval_s = progress_interval_s
        self.retry_s = retry_s
        self._pending: dict[str, dict[str, Any]] = {}
        self._last_progress_write: dict[str, float] = {}
        self._writing: str | None = None
        self._retrying = False
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def publish(self, event: JobEvent) -> None:
        self.inner.publish(event)
        changes = self._changes_of(event)
        if changes is None:
            return
        self._pending.setdefault(event.job_id, {}).update(changes)
        self._idle.clear()
        self._wakeup.set()
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to write with
                # One writer for every job: it carries no single call's request id.
                self._task = start_detached(self._run(), name="job-recorder", request_id="")

    def _changes_of(self, event: JobEvent) -> dict[str, Any] | None:
        changes: dict[str, Any] = {"last_seq": event.seq, "progress": event.progress}
        if event.kind is EventKind.STATUS:
            job = self.find_job(event.job_id)
            changes.update(status=event.status.value, error=event.error, model_id=event.model_id)
            if job is not None:
                changes.update(attempts=job.attempts, started_at=job.started_at, finished_at=job.finished_at)
                if job.started_at is not None:
                    changes["replica"] = self.replica
            return changes
        if event.kind is EventKind.PROGRESS:
            now = time.monotonic()
            if now - self._last_progress_write.get(event.job_id, -1e9) < self.progress_interval_s:
                return None
            self._last_progress_write[event.job_id] = now
            checkpoint = latest_checkpoint(self.checkpoint_dir(event.job_id))
            if checkpoint is not None:
                changes["checkpoint"] = str(checkpoint)
            return changes
        return None  # metrics and log lines are in the event stream; the record needs no write

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            job_id = next(iter(self._pending))
            changes = self._pending.pop(job_id)
            self._writing = job_id
            try:
                await self.store.update_job(job_id, changes)
                self._retrying = False
            except Unavailable as exc:
                # Keep it, under anything newer that arrived meanwhile, and try again.
                self._pending[job_id] = {**changes, **self._pending.get(job_id, {})}
                self._retrying = True
                log.warning("recording job %s failed, will retry: %s", job_id, exc.message)
                await asyncio.sleep(self.retry_s)
            except ModelForgeError as exc:
                self._retrying = False
                log.warning("recording job %s refused: %s", job_id, exc.message)
            finally:
                self._writing = None

    @property
    def retrying(self) -> bool:
        """Whether the last write failed for want of the registry (its changes are kept and retried)."""
        return self._retrying

    async def flush(self, timeout_s: float) -> bool:
        """Waits until every change is written (True) or the timeout passes (False)."""
        if self._task is None:
            return not self._pending
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return not self._pending and self._writing is None

    async def close(self, timeout_s: float = 5.0) -> None:
        if not await self.flush(timeout_s):
            log.warning("closing with %d unrecorded job change(s)", len(self._pending))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
