"""Training overhead: a plain trl script vs POST /api/start_training through the whole stack, on the
same model, rows and SFTConfig; steps/s, tokens/s and the time from the request to the first step.

Steps/s on both sides is timed over the same window, first logged step to last: the plain script
stamps each on_log; the ModelForge job's progress events carry the trainer-svc's timestamp, taken as
it reads each on_log report from the worker's pipe.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    TRAINING_SETTINGS,
    BenchContext,
    Goal,
    Section,
    Table,
    count_parameters,
    iso_seconds,
    median,
    ratio,
    ratio_doubt,
    rusage_cpu_seconds,
    stack_cpu_seconds,
    torch_thread_env,
)
from bench.watch import JobRun, run_watched_job

REPO_ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT_GOAL = 0.97
STEPS = {"quick": 3, "tiny": 400, "small": 24}
ROUNDS = {"tiny": 5, "small": 5}


def run_plain(
    context: BenchContext, max_steps: int, name: str, model_dir: Path | None = None, qlora: bool = False
) -> dict[str, Any]:
    """Runs bench/plain_trl.py in a fresh process (as a user runs a script) and returns its timings."""
    run_dir = context.work_dir / "plain-trl" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = run_dir / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "model": str(model_dir or context.model_dir),
                "dataset": str(context.dataset_path),
                "output_dir": str(run_dir / "out"),
                "qlora": qlora,
                "hyperparameters": {**TRAINING_SETTINGS, "max_steps": max_steps},
            }
        )
    )
    result_path = run_dir / "result.json"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        **torch_thread_env(),
    }
    cpu_before = rusage_cpu_seconds(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "bench.plain_trl", str(settings), str(result_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"plain trl script failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(result_path.read_text())
    result["spawned"] = spawned
    result["cpu_s"] = rusage_cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before
    return result


# The processes a ModelForge job runs through besides its worker (their own CPU, children excluded).
PLATFORM_PROCESSES = {
    "trainer": "trainer-svc (without its worker)",
    "gateway": "gateway",
    "nats": "nats-server",
    "registry": "registry-svc",
}


def wait_workers_reaped(context: BenchContext, timeout_s: float = 30) -> None:
    """The terminal event may arrive a moment before trainer-svc has waited for its worker."""
    deadline = time.monotonic() + timeout_s
    pids = [pid for name, pid in context.stack.running().items() if name.startswith("trainer")]
    while time.monotonic() < deadline and any(psutil.Process(pid).children() for pid in pids):
        time.sleep(0.1)


def plain_steps_per_s(result: dict[str, Any]) -> float:
    steps = result["steps"]
    if len(steps) < 2:
        return float("nan")
    return (steps[-1][0] - steps[0][0]) / (steps[-1][1] - steps[0][1])


def plain_phases(result: dict[str, Any]) -> dict[str, float]:
    first_step = result["steps"][0][1]
    return {
        "process spawn + interpreter": result["started"] - result["spawned"],
        "imports (torch, transformers, trl, peft, datasets)": result["imported"] - result["started"],
        "model + tokenizer load": result["loaded"] - result["imported"],
        "dataset prep + SFTTrainer build (tokenization, LoRA)": result["prepared"] - result["loaded"],
        "first optimizer step": first_step - result["prepared"],
        "total: start to first step": first_step - result["spawned"],
    }


def _first(events: list[dict[str, Any]], predicate: Any) -> float | None:
    for event in events:
        if predicate(event):
            return iso_seconds(event["timestamp"])
    return None


def modelforge_phases(run: JobRun) -> dict[str, float]:
    """Phases from the job's own events: status running (job set up, worker about to spawn), then the
    worker's "Preparing" (imports done), "Loading" (rows read, strategy imported), "Training for"
    (model and dataset ready) logs, then the first logged step."""
    events = run.events()
    marks = {
        "running": _first(events, lambda e: e.get("type") == "status" and e.get("status") in ("training", "running")),
        "imported": _first(events, lambda e: e.get("type") == "log" and str(e.get("message")).startswith("Preparing")),
        "strategy": _first(events, lambda e: e.get("type") == "log" and str(e.get("message")).startswith("Loading")),
        "ready": _first(events, lambda e: e.get("type") == "log" and str(e.get("message")).startswith("Training for")),
        "first_step": _first(events, lambda e: e.get("type") == "progress" and isinstance(e.get("loss"), int | float)),
    }

    def span(start: float | None, end: float | None) -> float:
        return end - start if start is not None and end is not None else float("nan")

    return {
        "API request + job set up (gateway, gRPC, trainer-svc)": span(run.requested_at, marks["running"]),
        "worker spawn + imports (torch, transformers)": span(marks["running"], marks["imported"]),
        "dataset read + split, strategy imports (trl, peft)": span(marks["imported"], marks["strategy"]),
        "model load + dataset prep + SFTTrainer build": span(marks["strategy"], marks["ready"]),
        "first optimizer step": span(marks["ready"], marks["first_step"]),
        "total: request to first step": span(run.requested_at, marks["first_step"]),
    }


def run(
    context: BenchContext, *, key: str = "training", title: str = "Training overhead: plain trl vs ModelForge"
) -> Section:
    max_steps = STEPS["quick"] if context.quick else STEPS[context.size]
    rounds = 1 if context.quick else ROUNDS[context.size]
    plain_runs: list[dict[str, Any]] = []
    mf_runs: list[JobRun] = []
    mf_cpu: list[dict[str, float]] = []
    for index in range(rounds):
        # A B, B A, A B ...: machine noise hits both sides alike, and neither side always runs right
        # after the other (the stack finishing a job's bookkeeping, a plain script's exit).
        plain_first = index % 2 == 0
        if plain_first:
            plain_runs.append(run_plain(context, max_steps, f"run-{index}"))
        cpu_before = stack_cpu_seconds(context.stack, PLATFORM_PROCESSES)
        if context.quick:
            # Quick mode (the smoke test) watches this one job under the events benchmark's load as well.
            mf_run = asyncio.run(run_watched_job(context, max_steps, clients=5, readers=3))
            context.shared["quick_job"] = mf_run
        else:
            mf_run = asyncio.run(run_watched_job(context, max_steps))
        wait_workers_reaped(context)
        cpu_after = stack_cpu_seconds(context.stack, PLATFORM_PROCESSES)
        mf_cpu.append({name: cpu_after[name] - cpu_before[name] for name in cpu_after})
        if mf_run.final_status() != "completed":
            raise RuntimeError(f"ModelForge job {mf_run.job_id} ended {mf_run.final_status()}: {mf_run.events()[-1:]}")
        mf_runs.append(mf_run)
        if not plain_first:
            plain_runs.append(run_plain(context, max_steps, f"run-{index}"))

    tokens_per_step = median([r["tokens_per_step"] for r in plain_runs])
    plain_rates = [plain_steps_per_s(r) for r in plain_runs]
    mf_rates = [r.steps_per_s() for r in mf_runs]
    ratios = [ratio(m, p) for m, p in zip(mf_rates, plain_rates, strict=True)]
    median_ratio = median(ratios)

    params = count_parameters(context.model_dir)
    section = Section(
        key=key,
        title=title,
        method=(
            f"Model: {context.size} random-init Llama ({params / 1e6:.2f}M parameters), LoRA r="
            f"{TRAINING_SETTINGS['lora_r']} on all linear layers, {max_steps} steps, batch "
            f"{TRAINING_SETTINGS['per_device_train_batch_size']}, max_length {TRAINING_SETTINGS['max_seq_length']}, "
            f"same rows, split and SFTConfig on both sides (bench/plain_trl.py mirrors the training runtime's "
            f"strategies/sft.py + strategies/common.py, in training/). {rounds} rounds, plain then ModelForge in "
            f"even rounds, ModelForge then plain in odd ones. Steps/s over "
            f"first to last logged step; tokens/s = steps/s x {tokens_per_step:.1f} mean tokens per step (same data)."
        ),
    )
    throughput = Table("Throughput (median of rounds)", ["side", "steps/s", "tokens/s", "per-round steps/s"])
    for name, rates in (("plain trl script", plain_rates), ("ModelForge (POST /api/start_training)", mf_rates)):
        throughput.add(name, median(rates), median(rates) * tokens_per_step, ", ".join(f"{r:.2f}" for r in rates))
    throughput.add(
        "ratio ModelForge / plain (median of per-round ratios)",
        median_ratio,
        median_ratio,
        ", ".join(f"{r:.3f}" for r in ratios),
    )
    section.tables.append(throughput)

    cpu = Table(
        "CPU time per run (median of rounds): where the work happens",
        ["process", "CPU s per run", "CPU ms per training step"],
    )
    cpu_rows = [("plain trl script (whole process)", [r["cpu_s"] for r in plain_runs])]
    cpu_rows.append(("ModelForge worker (whole process)", [c["worker"] for c in mf_cpu]))
    for name, label in PLATFORM_PROCESSES.items():
        cpu_rows.append((label, [c[name] for c in mf_cpu]))
    cpu_rows.append(("all platform processes but the worker", [sum(c[k] for k in PLATFORM_PROCESSES) for c in mf_cpu]))
    for label, values in cpu_rows:
        cpu.add(label, median(values), 1000 * median(values) / max_steps)
    section.tables.append(cpu)

    plain_cold = [plain_phases(r) for r in plain_runs]
    mf_cold = [modelforge_phases(r) for r in mf_runs]
    for table_title, phases in (
        ("Cold start, plain trl script (s, median)", plain_cold),
        ("Cold start, ModelForge request to first step (s, median)", mf_cold),
    ):
        table = Table(table_title, ["phase", "seconds"])
        for phase in phases[0]:
            table.add(phase, median([p[phase] for p in phases]))
        section.tables.append(table)
    plain_total = median([p["total: start to first step"] for p in plain_cold])
    mf_total = median([p["total: request to first step"] for p in mf_cold])
    section.goals.append(
        Goal(
            "training throughput vs plain trl",
            f">= {THROUGHPUT_GOAL}x",
            f"{median_ratio:.3f}x",
            None if median_ratio != median_ratio else median_ratio >= THROUGHPUT_GOAL,
            doubt="" if context.quick else ratio_doubt(ratios),
        )
    )
    section.notes.append(
        f"Cold start to first step: plain {plain_total:.2f} s, ModelForge {mf_total:.2f} s "
        f"({ratio(mf_total, plain_total):.2f}x); informational, no goal was set."
    )
    section.notes.append("Event timestamps have millisecond resolution; step windows are seconds long.")
    return section
