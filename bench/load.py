"""Load: 64 concurrent clients reading GET /api/training_status and GET /api/models for 30 s through the
gateway (the real stack), side by side with a bare uvicorn/FastAPI app answering the same JSON on the
same machine (issue 14's Done-when: 0 errors, >= 0.5x the bare app's requests/s, p99 <= 100 ms).

Every client is a closed loop on its own keep-alive connection (bench/httpclient.py, so the client
costs little on both sides), alternating the two paths; half the clients start on each. Sides run
alternately (bare, gateway, bare, gateway ...). Besides wall-clock figures, the CPU time the serving
processes spend per request is reported: the gateway side counts the gateway and the services it
calls (trainer-svc for the status, registry-svc for the listing).

The gateway runs with its default settings, so its read caches are on (gateway/README.md, "Read
caches"): each answer is at most 1 s old, and the trainer and registry see about one call per path
per half second whatever the load. Their rows in the CPU table show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from bench.common import BenchContext, Goal, Section, Table, cpu_seconds, median, percentile, ratio
from bench.httpclient import KeepAliveClient
from bench.profile_gateway import profile_gateway
from modelforge_common.testing import free_port
from modelforge_gateway.settings import GatewaySettings

PATHS = ("/api/training_status", "/api/models")
CLIENTS = 64
DURATION_S = 30.0
RATIO_GOAL = 0.5
P99_GOAL_MS = 100.0
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Window:
    """One side's measurement window: latency of every answered request by path, and the errors."""

    seconds: float = 0.0
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: {path: [] for path in PATHS})
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    cpu_s_by_process: dict[str, float] = field(default_factory=dict)

    @property
    def all_latencies(self) -> list[float]:
        return [value for values in self.latencies_s.values() for value in values]

    @property
    def requests(self) -> int:
        return len(self.all_latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    def p_ms(self, fraction: float, path: str | None = None) -> float:
        values = self.latencies_s[path] if path else self.all_latencies
        return 1000 * percentile(values, fraction)

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / self.requests if self.requests else float("nan")


async def run_window(port: int, clients: int, duration_s: float, warm_s: float) -> Window:
    """`clients` closed loops for warm_s (not counted), then duration_s (counted)."""
    window = Window()
    counting = asyncio.Event()
    stop_at = [float("inf")]

    async def client(index: int) -> None:
        connection = KeepAliveClient("127.0.0.1", port)
        turn = index % len(PATHS)
        try:
            while time.perf_counter() < stop_at[0]:
                path = PATHS[turn]
                turn = (turn + 1) % len(PATHS)
                started = time.perf_counter()
                try:
                    status, body = await connection.get(path)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    if counting.is_set():
                        window.errors.append(f"GET {path}: {type(exc).__name__}: {exc}")
                    await connection.close()
                    continue
                if not counting.is_set():
                    continue
                if status != 200:
                    window.errors.append(f"GET {path} -> {status}: {body[:120]!r}")
                    continue
                window.latencies_s[path].append(time.perf_counter() - started)
        finally:
            await connection.close()

    tasks = [asyncio.create_task(client(index)) for index in range(clients)]
    await asyncio.sleep(warm_s)
    counting.set()
    started = time.perf_counter()
    stop_at[0] = started + duration_s
    await asyncio.gather(*tasks)
    # Requests in flight at the deadline finish after it; they were counted, so is their time.
    window.seconds = time.perf_counter() - started
    return window


@contextlib.contextmanager
def bare_app(bodies: dict[str, object], work_dir: Path) -> Iterator[tuple[int, int]]:
    """The baseline app in its own process: yields (port, pid)."""
    bodies_file = work_dir / "load-bare-bodies.json"
    bodies_file.write_text(json.dumps(bodies))
    port = free_port()
    log_path = work_dir / "load-bare-app.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_app", "--port", str(port), "--bodies", str(bodies_file)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}{PATHS[0]}", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bare app did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(context: BenchContext) -> Section:
    rounds = 1 if context.quick else 2
    clients = 4 if context.quick else CLIENTS
    duration_s = 2.0 if context.quick else DURATION_S
    warm_s = 0.5 if context.quick else 3.0
    context.ensure_model()  # the listing holds at least one registered model
    bodies = {path: context.http.get(path).raise_for_status().json() for path in PATHS}
    gateway_port = urlparse(context.gateway_url).port or 80
    serving = {name: pid for name, pid in context.stack.running().items() if name in ("gateway", "trainer", "registry")}

    windows: dict[str, list[Window]] = {"bare FastAPI (uvicorn)": [], "ModelForge gateway": []}
    with bare_app(bodies, context.work_dir) as (bare_port, bare_pid):
        for _ in range(rounds):
            for side, port, pids in (
                ("bare FastAPI (uvicorn)", bare_port, {"bare app": bare_pid}),
                ("ModelForge gateway", gateway_port, serving),
            ):
                before = {name: cpu_seconds([pid]) for name, pid in pids.items()}
                window = asyncio.run(run_window(port, clients, duration_s, warm_s))
                # The warm-up's CPU is counted too (both sides have one); it is small beside the window.
                window.cpu_s_by_process = {name: cpu_seconds([pid]) - before[name] for name, pid in pids.items()}
                window.cpu_s = sum(window.cpu_s_by_process.values())
                windows[side].append(window)

    section = Section(
        key="load",
        title="Load: concurrent readers through the gateway vs a bare FastAPI app",
        method=(
            f"{rounds} round(s); in each, the bare app then the gateway, {clients} clients for {duration_s:.0f} s "
            f"(after {warm_s:.1f} s of warm-up), each a closed loop on one keep-alive connection alternating "
            f"GET {PATHS[0]} and GET {PATHS[1]}. The bare app (bench/bare_app.py: FastAPI under uvicorn, one "
            "process, as the gateway runs) answers the bodies the gateway returned at the start; the listing "
            f"held {len(bodies['/api/models'].get('models', []))} model(s). The gateway runs with its default "
            f"read caches (answers at most {GatewaySettings.model_fields['status_cache_s'].default:g} s / "
            f"{GatewaySettings.model_fields['models_cache_s'].default:g} s old: MODELFORGE_STATUS_CACHE_S / "
            "MODELFORGE_MODELS_CACHE_S, which the bench's stack leaves unset; refreshed from the services past "
            "half that). Figures are medians over rounds."
        ),
    )
    table = Table(
        f"Requests/s and latency at {clients} clients (median of rounds)",
        ["side", "requests/s", "p50 ms", "p99 ms", "errors", "server CPU ms/request"],
    )
    by_path = Table("Latency by path (median of rounds)", ["side", "path", "p50 ms", "p99 ms", "requests"])
    for side, side_windows in windows.items():
        table.add(
            side,
            median([w.rps for w in side_windows]),
            median([w.p_ms(0.5) for w in side_windows]),
            median([w.p_ms(0.99) for w in side_windows]),
            sum(len(w.errors) for w in side_windows),
            median([w.cpu_ms_per_request for w in side_windows]),
        )
        for path in PATHS:
            by_path.add(
                side,
                path,
                median([w.p_ms(0.5, path) for w in side_windows]),
                median([w.p_ms(0.99, path) for w in side_windows]),
                sum(len(w.latencies_s[path]) for w in side_windows),
            )
    bare, gateway = windows["bare FastAPI (uvicorn)"], windows["ModelForge gateway"]
    rps_ratio = median([ratio(g.rps, b.rps) for g, b in zip(gateway, bare, strict=True)])
    p99_ms = median([g.p_ms(0.99) for g in gateway])
    errors = sum(len(w.errors) for side_windows in windows.values() for w in side_windows)
    by_process = Table(
        "Server CPU per request by process (median of rounds)", ["side", "process", "CPU ms/request", "cores busy"]
    )
    for side, side_windows in windows.items():
        for name in side_windows[0].cpu_s_by_process:
            by_process.add(
                side,
                name,
                median([1000 * w.cpu_s_by_process[name] / w.requests for w in side_windows if w.requests]),
                median([w.cpu_s_by_process[name] / w.seconds for w in side_windows if w.seconds]),
            )
    section.tables += [table, by_path, by_process]
    section.goals += [
        Goal(
            f"requests/s through the gateway vs the bare app, {clients} clients",
            f">= {RATIO_GOAL}x",
            f"{rps_ratio:.2f}x",
            None if rps_ratio != rps_ratio else rps_ratio >= RATIO_GOAL,
        ),
        Goal(
            f"p99 latency through the gateway, {clients} clients",
            f"<= {P99_GOAL_MS:.0f} ms",
            f"{p99_ms:.1f} ms",
            None if p99_ms != p99_ms else p99_ms <= P99_GOAL_MS,
        ),
        Goal("no errors under load (both sides)", "0", str(errors), errors == 0),
    ]
    cores = os.cpu_count() or 1
    for side, side_windows in windows.items():
        cpu_ms = median([w.cpu_ms_per_request for w in side_windows])
        if cpu_ms == cpu_ms and cpu_ms > 0:
            section.notes.append(
                f"{side}: {cpu_ms:.2f} ms of server CPU per request caps it near {cores * 1000 / cpu_ms:,.0f} "
                f"requests/s on this machine's {cores} cores, with nothing else running (the clients share them)."
            )
    for side, side_windows in windows.items():
        for message in sorted({e for w in side_windows for e in w.errors})[:5]:
            section.notes.append(f"{side} error: `{message}`")
    if context.quick or any(goal.met is False for goal in section.goals[:2]):
        # Where the gateway's time goes for the costlier path: its layers under a back-to-back loop.
        slower = max(PATHS, key=lambda path: median([g.p_ms(0.5, path) for g in gateway]))
        section.tables.append(profile_gateway(context, requests=30 if context.quick else 1500, path=slower))
    return section
