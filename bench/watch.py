"""One training job through the public API, watched the way users watch it: N WebSocket clients on
/ws/training (connected before the job starts, so each must see every event from seq 1) and M status
readers polling GET /api/training_status while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import websockets

from bench.common import TERMINAL, BenchContext, iso_seconds
from bench.httpclient import KeepAliveClient


@dataclass
class ClientLog:
    """What one WebSocket client received: (receipt time, event) pairs, and how it ended."""

    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    error: str = ""

    def job_events(self, job_id: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.received if e.get("job_id") == job_id]


@dataclass
class JobRun:
    job_id: str
    requested_at: float  # just before POST /api/start_training
    accepted_at: float  # when its answer arrived
    clients: list[ClientLog]
    reader_latencies_s: list[float]
    reader_errors: list[str]

    def events(self, client: int = 0) -> list[dict[str, Any]]:
        return [e for _, e in self.clients[client].job_events(self.job_id)]

    def step_times(self, client: int = 0) -> list[tuple[int, float]]:
        """(step, server timestamp) of each progress event carrying a loss (one per logged step)."""
        return [
            (int(e["current_step"]), iso_seconds(e["timestamp"]))
            for e in self.events(client)
            if e.get("type") == "progress" and isinstance(e.get("loss"), int | float)
        ]

    def steps_per_s(self, client: int = 0) -> float:
        steps = self.step_times(client)
        if len(steps) < 2 or steps[-1][1] <= steps[0][1]:
            return float("nan")
        return (steps[-1][0] - steps[0][0]) / (steps[-1][1] - steps[0][1])

    def event_latencies_s(self) -> list[float]:
        """Receipt time minus the event's timestamp, for every logged-step event at every client."""
        latencies = []
        for client in self.clients:
            for received, event in client.job_events(self.job_id):
                if event.get("type") == "progress" and isinstance(event.get("loss"), int | float):
                    latencies.append(received - iso_seconds(event["timestamp"]))
        return latencies

    def final_status(self) -> str:
        events = self.events()
        return str(events[-1].get("status")) if events else "no events"

    def problems(self) -> list[str]:
        """Every client must have received seq 1..N exactly once, in order, ending in a terminal status."""
        found = []
        for index, client in enumerate(self.clients):
            if client.error:
                found.append(f"client {index}: {client.error}")
                continue
            seqs = [int(e["seq"]) for _, e in client.job_events(self.job_id)]
            if seqs != list(range(1, len(seqs) + 1)):
                missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
                found.append(f"client {index}: seq not 1..{len(seqs)} in order (missing {missing[:5]})")
            events = [e for _, e in client.job_events(self.job_id)]
            if not events or events[-1].get("status") not in TERMINAL:
                found.append(f"client {index}: no terminal status")
        found += [f"status reader: {error}" for error in self.reader_errors[:5]]
        return found


async def _client(url: str, log: ClientLog, connected: asyncio.Event, job: dict[str, str]) -> None:
    try:
        async with websockets.connect(url, max_size=None, open_timeout=60, ping_interval=None) as socket:
            await socket.recv()  # the current status, sent on connect
            connected.set()
            async for raw in socket:
                received = time.time()
                event = json.loads(raw)
                log.received.append((received, event))
                if (
                    event.get("type") == "status"
                    and event.get("status") in TERMINAL
                    and job.get("id")
                    and event.get("job_id") == job["id"]
                ):
                    return
    except Exception as exc:  # noqa: BLE001 - a failed client is a finding to report, not a crash
        connected.set()
        log.error = f"{type(exc).__name__}: {exc}"


async def _reader(
    base_url: str, interval_s: float, stop: asyncio.Event, latencies: list[float], errors: list[str]
) -> None:
    parsed = urlparse(base_url)
    client = KeepAliveClient(parsed.hostname or "127.0.0.1", parsed.port or 80)
    try:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status, body = await client.get("/api/training_status")
                if status != 200:
                    errors.append(f"HTTP {status}: {body[:200]!r}")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        await client.close()


async def run_watched_job(
    context: BenchContext,
    max_steps: int,
    *,
    clients: int = 1,
    readers: int = 0,
    reader_interval_s: float = 0.25,
    timeout_s: float = 600,
    overrides: dict[str, Any] | None = None,
) -> JobRun:
    context.wait_idle()
    job: dict[str, str] = {}
    logs = [ClientLog() for _ in range(clients)]
    connected = [asyncio.Event() for _ in range(clients)]
    tasks = [
        asyncio.create_task(_client(context.ws_url, log, ready, job))
        for log, ready in zip(logs, connected, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in connected)), 120)
    stop_readers = asyncio.Event()
    latencies: list[float] = []
    errors: list[str] = []
    reader_tasks = [
        asyncio.create_task(_reader(context.gateway_url, reader_interval_s, stop_readers, latencies, errors))
        for _ in range(readers)
    ]
    async with httpx.AsyncClient(base_url=context.gateway_url, timeout=120) as http:
        requested = time.time()
        response = await http.post("/api/start_training", json=context.training_body(max_steps, **(overrides or {})))
        accepted = time.time()
    if response.status_code != 200:
        for task in tasks + reader_tasks:
            task.cancel()
        raise RuntimeError(f"start_training answered {response.status_code}: {response.text}")
    job["id"] = response.json()["job_id"]
    try:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        for index, task in enumerate(tasks):
            if task in pending:
                logs[index].error = f"no terminal event within {timeout_s}s"
    finally:
        stop_readers.set()
        await asyncio.gather(*reader_tasks, return_exceptions=True)
    return JobRun(job["id"], requested, accepted, logs, latencies, errors)
