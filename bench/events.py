"""Event latency, and issue 7's bounded load test.

Latency is the time from a training step's progress event (timestamped by trainer-svc as it reads the
worker's on_log report) to its receipt by a WebSocket client of /ws/training; one clock, one machine.
Three configurations run alternately, each a training job of its own: 1 client (the baseline), 100
clients, and 100 clients plus 50 concurrent GET /api/training_status readers. Every client connects
before the job starts and must receive seq 1..N of the job exactly once, in order.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass

from bench.common import (
    BenchContext,
    Goal,
    Section,
    Table,
    median,
    percentile,
    ratio,
    rusage_cpu_seconds,
    stack_cpu_seconds,
)
from bench.watch import JobRun, run_watched_job

LATENCY_GOAL_MS = 20.0
READER_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Load:
    name: str
    clients: int
    readers: int


def loads(quick: bool) -> list[Load]:
    if quick:
        return [Load("1 client", 1, 0), Load("5 clients + 3 status readers", 5, 3)]
    return [Load("1 client", 1, 0), Load("100 clients", 100, 0), Load("100 clients + 50 status readers", 100, 50)]


def run(context: BenchContext) -> Section:
    configs = loads(context.quick)
    max_steps = 3 if context.quick else 30
    rounds = 1 if context.quick else 3
    runs: dict[str, list[JobRun]] = {load.name: [] for load in configs}
    # CPU seconds per run of the processes an event passes through, and of the clients (this process).
    cpu: dict[str, list[dict[str, float]]] = {load.name: [] for load in configs}
    for _ in range(rounds):
        for load in configs:
            if context.quick and load.clients == 1:
                continue  # quick: one job, under load; its first client doubles as the baseline
            if context.quick and "quick_job" in context.shared:
                runs[load.name].append(context.shared["quick_job"])
                continue
            before = process_cpu(context)
            runs[load.name].append(
                asyncio.run(
                    run_watched_job(
                        context,
                        max_steps,
                        clients=load.clients,
                        readers=load.readers,
                        reader_interval_s=READER_INTERVAL_S,
                    )
                )
            )
            after = process_cpu(context)
            cpu[load.name].append({key: after[key] - before[key] for key in after})
    if context.quick:
        loaded = configs[-1]
        runs[configs[0].name] = [_first_client_only(r) for r in runs[loaded.name]]

    section = Section(
        key="events",
        title="Event latency and WebSocket load test",
        method=(
            f"Each configuration is one training job of {max_steps} steps (progress event per logged step); "
            f"{rounds} round(s) of the configurations in turn. Latency: WebSocket receipt time minus the event's "
            "`timestamp` (trainer-svc's clock when it read the worker's on_log report; millisecond resolution, so "
            "figures may read up to 1 ms high), over every logged-step event at every client. Status readers poll "
            f"GET /api/training_status every {READER_INTERVAL_S} s each over keep-alive connections. Steps/s from "
            "the events' server timestamps."
        ),
    )
    latency = Table(
        "Event latency, on_log to WebSocket receipt (ms)",
        ["configuration", "p50", "p99", "max", "events received", "per-round p99"],
    )
    load_table = Table(
        "Load test: errors, missed events, status readers, training throughput",
        [
            "configuration",
            "client or reader errors / missed events",
            "status reads",
            "read p50 ms",
            "read p99 ms",
            "training steps/s",
            "steps/s vs 1 client",
            "p50 latency vs 1 client",
            "p99 latency vs 1 client",
        ],
    )
    baseline_runs = runs[configs[0].name]
    problems_by_load: dict[str, list[str]] = {}
    for load in configs:
        load_runs = runs[load.name]
        all_latencies_ms = [1000 * v for r in load_runs for v in r.event_latencies_s()]
        round_p50 = [percentile([1000 * v for v in r.event_latencies_s()], 0.5) for r in load_runs]
        round_p99 = [percentile([1000 * v for v in r.event_latencies_s()], 0.99) for r in load_runs]
        latency.add(
            load.name,
            percentile(all_latencies_ms, 0.5),
            percentile(all_latencies_ms, 0.99),
            max(all_latencies_ms, default=float("nan")),
            len(all_latencies_ms),
            ", ".join(f"{p:.1f}" for p in round_p99),
        )
        problems = [p for r in load_runs for p in r.problems()]
        problems_by_load[load.name] = problems
        reads = [v for r in load_runs for v in r.reader_latencies_s]
        rates = [r.steps_per_s() for r in load_runs]
        paired = list(zip(load_runs, baseline_runs, strict=False))
        base_p50 = [percentile(b.event_latencies_s(), 0.5) for _, b in paired]
        base_p99 = [percentile(b.event_latencies_s(), 0.99) for _, b in paired]
        load_table.add(
            load.name,
            len(problems),
            len(reads),
            percentile([1000 * v for v in reads], 0.5) if reads else None,
            percentile([1000 * v for v in reads], 0.99) if reads else None,
            median(rates),
            median([ratio(r.steps_per_s(), b.steps_per_s()) for r, b in paired]),
            median([ratio(p / 1000, b) for p, b in zip(round_p50, base_p50, strict=False)]),
            median([ratio(p / 1000, b) for p, b in zip(round_p99, base_p99, strict=False)]),
        )
    section.tables += [latency, load_table]
    if not context.quick:
        section.tables.append(cpu_table(configs, runs, cpu))

    crowd = configs[1] if not context.quick else configs[-1]
    crowd_ms = [1000 * v for r in runs[crowd.name] for v in r.event_latencies_s()]
    crowd_p99 = percentile(crowd_ms, 0.99)
    section.goals.append(
        Goal(
            f"progress event p99 latency with {crowd.clients} clients",
            f"<= {LATENCY_GOAL_MS:.0f} ms",
            f"{crowd_p99:.1f} ms",
            None if crowd_p99 != crowd_p99 else crowd_p99 <= LATENCY_GOAL_MS,
        )
    )
    loaded = configs[-1]
    loaded_problems = problems_by_load[loaded.name]
    section.goals.append(
        Goal(
            f"load test ({loaded.name}): no errors, no missed events",
            "0",
            str(len(loaded_problems)),
            not loaded_problems,
        )
    )
    for name, problems in problems_by_load.items():
        section.notes += [f"{name}: {problem}" for problem in problems[:10]]
    if context.quick:
        section.notes.append("Quick mode: one job; the 1-client row is that job's first client.")
    return section


def _first_client_only(run: JobRun) -> JobRun:
    return JobRun(run.job_id, run.requested_at, run.accepted_at, run.clients[:1], [], [])


# Whose CPU an event costs: the stack's processes on its way, and the benchmark's clients.
CPU_SIDES = {"gateway": "gateway", "trainer": "trainer-svc (without its worker)", "nats": "nats-server"}


def process_cpu(context: BenchContext) -> dict[str, float]:
    totals = stack_cpu_seconds(context.stack, CPU_SIDES)
    totals["clients"] = rusage_cpu_seconds(resource.RUSAGE_SELF)
    return totals


def cpu_table(configs: list[Load], runs: dict[str, list[JobRun]], cpu: dict[str, list[dict[str, float]]]) -> Table:
    """CPU time per delivered event (one event at one client), so the cost of fanning out shows per socket."""
    table = Table(
        "CPU per delivered event, microseconds (median of rounds; delivered = events x clients)",
        ["configuration", *CPU_SIDES.values(), "WebSocket clients and status readers (the bench process)"],
    )
    for load in configs:
        per_round = []
        for run, spent in zip(runs[load.name], cpu[load.name], strict=True):
            delivered = sum(len(client.job_events(run.job_id)) for client in run.clients)
            per_round.append({key: 1e6 * value / max(delivered, 1) for key, value in spent.items()})
        table.add(
            load.name,
            *(median([r.get(key, float("nan")) for r in per_round]) for key in [*CPU_SIDES, "clients"]),
        )
    return table
