"""Gateway overhead: GET /api/training_status and GET /api/models/{id} vs the same gRPC calls made
directly (trainer GetTrainingStatus, registry GetModel), at 1 and 32 concurrent clients.

Both sides are closed loops of back-to-back requests from this process: gRPC over one channel with
the gateway's own channel options, HTTP over one keep-alive connection per client with a minimal
client (bench/httpclient.py), so the client's cost stays small on both sides. Besides latency, the CPU
time the serving processes spend per request (gateway + service vs the service alone) is reported: on
a shared machine it varies far less than wall-clock latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from bench.common import BenchContext, Goal, Section, Table, cpu_seconds, median, percentile
from bench.httpclient import KeepAliveClient
from bench.profile_gateway import profile_gateway
from modelforge.v1 import registry_pb2, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from modelforge_common.grpc_client import make_channel

OVERHEAD_GOAL_MS = 1.0
CONCURRENCY = (1, 32)
DEADLINE_S = 10.0

Call = Callable[[], Awaitable[None]]


@dataclass
class Trial:
    latencies_s: list[float]
    wall_s: float
    cpu_s: float = 0.0  # CPU time the serving processes spent on the trial

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / len(self.latencies_s)

    @property
    def p50_ms(self) -> float:
        return 1000 * percentile(self.latencies_s, 0.5)

    @property
    def p99_ms(self) -> float:
        return 1000 * percentile(self.latencies_s, 0.99)

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.wall_s


async def closed_loop(calls: list[Call], per_client: int) -> Trial:
    """Each client (one call function) makes per_client back-to-back requests; all run at once."""
    latencies: list[float] = []

    async def client(call: Call) -> None:
        for _ in range(per_client):
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(call) for call in calls))
    return Trial(latencies, time.perf_counter() - started)


def http_call(client: KeepAliveClient, path: str) -> Call:
    async def call() -> None:
        status, body = await client.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {body[:200]!r}")

    return call


async def measure(
    context: BenchContext, rounds: int, requests: dict[int, int]
) -> dict[tuple[str, int, str], list[Trial]]:
    model_id = context.ensure_model()["id"]
    trainer_channel = make_channel(context.stack.addr("trainer"))
    registry_channel = make_channel(context.stack.addr("registry"))
    trainer = trainer_pb2_grpc.TrainerServiceStub(trainer_channel)
    registry = registry_pb2_grpc.RegistryServiceStub(registry_channel)

    async def grpc_status() -> None:
        await trainer.GetTrainingStatus(trainer_pb2.GetTrainingStatusRequest(job_id=""), timeout=DEADLINE_S)

    async def grpc_model() -> None:
        await registry.GetModel(registry_pb2.GetModelRequest(id=str(model_id)), timeout=DEADLINE_S)

    endpoints = {
        "training status": (grpc_status, "/api/training_status", "trainer"),
        "model details": (grpc_model, f"/api/models/{model_id}", "registry"),
    }
    pids = {name: process.pid for name, process in context.stack.started.items()}
    parsed = urlparse(context.gateway_url)
    http_clients = [KeepAliveClient(parsed.hostname or "127.0.0.1", parsed.port or 80) for _ in range(max(CONCURRENCY))]
    trials: dict[tuple[str, int, str], list[Trial]] = {}
    try:
        for _ in range(rounds):
            for endpoint, (grpc_fn, path, service) in endpoints.items():
                for concurrency in CONCURRENCY:
                    sides: dict[str, list[Call]] = {
                        "direct gRPC": [grpc_fn] * concurrency,
                        "gateway HTTP": [http_call(c, path) for c in http_clients[:concurrency]],
                    }
                    for side, calls in sides.items():  # A B A B ...
                        await closed_loop(calls, 5)  # warm: connections open, caches filled
                        serving = [pids[service]] + ([pids["gateway"]] if side == "gateway HTTP" else [])
                        cpu_before = cpu_seconds(serving)
                        trial = await closed_loop(calls, requests[concurrency])
                        trial.cpu_s = cpu_seconds(serving) - cpu_before
                        trials.setdefault((endpoint, concurrency, side), []).append(trial)
    finally:
        for client in http_clients:
            await client.close()
        await trainer_channel.close()
        await registry_channel.close()
    return trials


def run(context: BenchContext) -> Section:
    rounds = 1 if context.quick else 5
    requests = {1: 20, 32: 3} if context.quick else {1: 300, 32: 30}
    trials = asyncio.run(measure(context, rounds, requests))

    section = Section(
        key="gateway",
        title="Gateway overhead: REST through the gateway vs direct gRPC",
        method=(
            f"{rounds} round(s); in each, for every endpoint and concurrency, direct gRPC then the gateway, "
            f"{requests[1]} requests at 1 client and {requests[32]} per client at 32 clients, after 5 warm-up "
            "requests per client. Figures are medians over rounds; the overhead is the median of per-round "
            "p50 differences."
        ),
    )
    table = Table(
        "Latency and throughput (median of rounds)",
        ["endpoint", "clients", "side", "p50 ms", "p99 ms", "requests/s", "server CPU ms/request"],
    )
    overhead = Table(
        "Gateway overhead (median of per-round differences and ratios)",
        [
            "endpoint",
            "clients",
            "p50 added ms",
            "p99 added ms",
            "p50 ratio",
            "requests/s ratio",
            "CPU ms added/request",
        ],
    )
    for endpoint in ("training status", "model details"):
        for concurrency in CONCURRENCY:
            direct = trials[(endpoint, concurrency, "direct gRPC")]
            gateway = trials[(endpoint, concurrency, "gateway HTTP")]
            for side, side_trials in (("direct gRPC", direct), ("gateway HTTP", gateway)):
                table.add(
                    endpoint,
                    concurrency,
                    side,
                    median([t.p50_ms for t in side_trials]),
                    median([t.p99_ms for t in side_trials]),
                    median([t.rps for t in side_trials]),
                    median([t.cpu_ms_per_request for t in side_trials]),
                )
            added_p50 = median([g.p50_ms - d.p50_ms for g, d in zip(gateway, direct, strict=True)])
            overhead.add(
                endpoint,
                concurrency,
                added_p50,
                median([g.p99_ms - d.p99_ms for g, d in zip(gateway, direct, strict=True)]),
                median([g.p50_ms / d.p50_ms for g, d in zip(gateway, direct, strict=True)]),
                median([g.rps / d.rps for g, d in zip(gateway, direct, strict=True)]),
                median([g.cpu_ms_per_request - d.cpu_ms_per_request for g, d in zip(gateway, direct, strict=True)]),
            )
            section.goals.append(
                Goal(
                    f"gateway adds to p50: {endpoint}, {concurrency} client(s)",
                    f"<= {OVERHEAD_GOAL_MS:.0f} ms",
                    f"{added_p50:.2f} ms",
                    None if added_p50 != added_p50 else added_p50 <= OVERHEAD_GOAL_MS,
                )
            )
    section.tables += [table, overhead]
    if context.quick or any(goal.met is False for goal in section.goals):
        # Where the time goes: a gateway's time by layer under the 1-client status loop.
        section.tables.append(profile_gateway(context, requests=30 if context.quick else 1500))
    return section
