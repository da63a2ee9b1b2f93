"""What every benchmark shares: statistics, result tables, the stack they run against, and the tiny
(or ~100M-parameter) model, dataset and training settings used on both sides of each comparison."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import resource
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_devkit.stack import Stack, private_env
from modelforge_devkit.tiny_models import build_tiny_model

TERMINAL = ("completed", "error", "stopped")

# --- statistics ----------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far: less sensitive to other load than latency."""
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def rusage_cpu_seconds(who: int) -> float:
    """User + system CPU time of this process (RUSAGE_SELF) or its waited-for children (RUSAGE_CHILDREN)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def stack_cpu_seconds(stack: Stack, names: Iterable[str]) -> dict[str, float]:
    """CPU seconds so far of the stack's processes by name (replicas such as trainer-2 summed under
    "trainer"), their own time only; "worker" is what trainer-svc's finished workers used."""
    totals = dict.fromkeys([*names, "worker"], 0.0)
    for process_name, pid in stack.running().items():
        name = next((n for n in names if process_name.startswith(n)), None)
        if name is None:
            continue
        times = psutil.Process(pid).cpu_times()
        totals[name] += times.user + times.system
        if name == "trainer":
            totals["worker"] += times.children_user + times.children_system
    return totals


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def ratio_doubt(per_round: Sequence[float], spread: float = 1.5, ceiling: float = 1.5) -> str:
    """Why per-round ratios of "ModelForge / the library it calls" cannot decide a goal: rounds more than
    `spread` apart, or a median above `ceiling` (the platform runs the same library call, so a large
    gain means the baseline was slowed by something else); "" when they can."""
    finite = [r for r in per_round if math.isfinite(r) and r > 0]
    if len(finite) >= 2 and max(finite) / min(finite) > spread:
        return f"rounds disagree ({min(finite):.2f}x to {max(finite):.2f}x)"
    if finite and median(finite) > ceiling:
        return f"{median(finite):.2f}x over the library it calls: the baseline ran slow"
    return ""


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def ratio(numerator: float, denominator: float) -> float:
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if magnitude < 1 else f"{value:.{max(1, digits - 1)}f}"
    return str(value)


# --- results -------------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"{self.title}: row has {len(cells)} cells, table has {len(self.headers)} columns")
        self.rows.append(list(cells))

    def markdown(self) -> str:
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.headers) + " |",
            "|" + "|".join("---" for _ in self.headers) + "|",
        ]
        lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Goal:
    """One goal of the issue: `met` is None when it could not be measured."""

    name: str
    target: str
    measured: str
    met: bool | None
    # Why the measurement may not settle the goal (rounds that disagree, a baseline that cannot be right).
    doubt: str = ""

    @property
    def verdict(self) -> str:
        """Met or not by the median; a doubt about the measurement is said beside it, not instead."""
        if self.met is None:
            return "not measured"
        decided = "met" if self.met else "NOT MET"
        return f"{decided} (uncertain: {self.doubt})" if self.doubt else decided


@dataclass
class Section:
    key: str
    title: str
    method: str
    tables: list[Table] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> str:
        parts = [f"## {self.title}", "", self.method, ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        if self.goals:
            goals = Table("Goals", ["goal", "target", "measured", "verdict"])
            for goal in self.goals:
                goals.add(goal.name, goal.target, goal.measured, goal.verdict)
            parts += [goals.markdown(), ""]
        parts += [f"- {note}" for note in self.notes]
        parts += ["", f"_Ran in {self.seconds:.0f} s._", ""]
        return "\n".join(parts)


# --- the environment the benchmarks run in -------------------------------------------------------

# Every hyperparameter is set explicitly, so the plain trl script and the job sent through the API
# train with the same values whatever the trainer's defaults are.
TRAINING_SETTINGS: dict[str, Any] = {
    "num_train_epochs": 1.0,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "max_seq_length": 64,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "warmup_ratio": 0.03,
    "lr_scheduler_type": "linear",
    "optim": "adamw_torch",
    "save_steps": 100_000,  # no intermediate checkpoint on either side
    "logging_steps": 1,
    "eval_split": 0.1,
    "seed": 42,
    "bf16": False,
}
DATASET_ROWS = 200

# ~110M parameters: Llama layout with a 768 hidden size and 12 layers (the tiny tokenizer's vocabulary).
SMALL_LLAMA = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}


# torch's intra-op threads on every side (the plain scripts, the trainer's worker, inference-svc).
# With as many threads as cores, every other runnable process (trainer-svc reading the worker's
# pipe, NATS, the gateway, the benchmark's own clients) stalls one thread at each OpenMP barrier,
# so a step's time swings with whatever else runs; one thread leaves a core to the rest and makes
# both sides comparable. BENCH_TORCH_THREADS=0 keeps torch's default.
TORCH_THREADS = int(os.environ.get("BENCH_TORCH_THREADS", "1"))


def cuda_available() -> bool:
    """Whether torch sees an NVIDIA GPU (False where torch is missing): the GPU benchmarks' gate."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def torch_thread_env() -> dict[str, str]:
    if TORCH_THREADS <= 0:
        return {}
    return {"OMP_NUM_THREADS": str(TORCH_THREADS), "MKL_NUM_THREADS": str(TORCH_THREADS)}


def torch_threads_label() -> str:
    return f"{TORCH_THREADS} (BENCH_TORCH_THREADS)" if TORCH_THREADS > 0 else "torch's default (one per core)"


def stack_env(data_dir: Path) -> dict[str, str]:
    """A private stack on free loopback ports (as tests/conftest.py builds it)."""
    return private_env(data_dir, {
        # The bench builds its models beside the stack's data dir (work_dir/models).
        "MODELFORGE_MODEL_ROOTS": str(data_dir.parent),
        "MODELFORGE_RUN_DIR": str(data_dir / "run"),
        **torch_thread_env(),
    })


def build_small_model(out_dir: Path, tokenizer_dir: Path) -> Path:
    """A ~110M-parameter random-init Llama with the tiny model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out_dir / "config.json").exists():
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **SMALL_LLAMA,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def count_parameters(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    hidden, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv_heads, vocab = config["num_attention_heads"], config["num_key_value_heads"], config["vocab_size"]
    head_dim = hidden // heads
    attention = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim
    return layers * (attention + 3 * hidden * inter + 2 * hidden) + 2 * vocab * hidden + hidden


@dataclass
class BenchContext:
    """One stack, one model and one uploaded dataset shared by every benchmark of a run."""

    stack: Stack
    work_dir: Path
    quick: bool
    size: str
    model_dir: Path
    dataset_path: Path
    dataset_name: str = ""
    http: httpx.Client = field(init=False)
    trained_model: dict[str, Any] | None = None
    # Results one benchmark leaves for another (quick mode runs a single watched job for two of them).
    shared: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.stack.gateway_url, timeout=120)

    @property
    def gateway_url(self) -> str:
        return self.stack.gateway_url

    @property
    def ws_url(self) -> str:
        return self.stack.gateway_url.replace("http://", "ws://") + "/ws/training"

    def training_body(self, max_steps: int, **overrides: Any) -> dict[str, Any]:
        return {
            "task": "text-generation",
            "model_name": str(self.model_dir),
            "provider": "huggingface",
            "strategy": "sft",
            "dataset": self.dataset_name,
            **TRAINING_SETTINGS,
            "max_steps": max_steps,
            **overrides,
        }

    def upload_dataset(self) -> None:
        with self.dataset_path.open("rb") as handle:
            response = self.http.post(
                "/api/upload_dataset", files={"file": (self.dataset_path.name, handle, "application/jsonl")}
            )
        response.raise_for_status()
        self.dataset_name = response.json()["filename"]

    def wait_idle(self, timeout_s: float = 600) -> dict[str, Any]:
        """Waits until no job runs (the seed endpoints run one job at a time)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.http.get("/api/training_status").json()
            if status["status"] not in ("training", "running", "queued"):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"a training job is still running after {timeout_s}s: {status}")
            time.sleep(0.2)

    def ensure_model(self) -> dict[str, Any]:
        """A model registered by a finished job: the latest one, or a 2-step job trained now."""
        if self.trained_model is None:
            models = self.http.get("/api/models").json()["models"]
            if not models:
                self.wait_idle()
                started = self.http.post("/api/start_training", json=self.training_body(2))
                started.raise_for_status()
                job_id = started.json()["job_id"]
                status = self.wait_idle()
                if status["status"] != "completed":
                    raise RuntimeError(f"training job {job_id} ended {status['status']}: {status.get('error')}")
                models = self.http.get("/api/models").json()["models"]
            latest = max(models, key=lambda m: m["id"])
            self.trained_model = self.http.get(f"/api/models/{latest['id']}").json()
        return self.trained_model


@contextlib.contextmanager
def bench_context(work_dir: Path, *, quick: bool, size: str) -> Iterator[BenchContext]:
    """Builds the model and dataset, starts the stack on free ports, and stops it afterwards."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tiny = (
        build_tiny_model(work_dir / "models" / "tiny-llama", "causal")
        if not (work_dir / "models" / "tiny-llama" / "config.json").exists()
        else work_dir / "models" / "tiny-llama"
    )
    model_dir = tiny if size == "tiny" else build_small_model(work_dir / "models" / "small-llama", tiny)
    dataset = write_jsonl(text_generation_rows(DATASET_ROWS, seed=5), work_dir / "bench-chat.jsonl")
    stack = Stack.from_environment(stack_env(work_dir / "stack"))
    try:
        stack.start()
        context = BenchContext(
            stack=stack, work_dir=work_dir, quick=quick, size=size, model_dir=model_dir, dataset_path=dataset
        )
        context.upload_dataset()
        yield context
        context.http.close()
    finally:
        stack.stop()


def iso_seconds(timestamp: str) -> float:
    """Epoch seconds of an event's ISO 8601 timestamp (Z suffix)."""
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def load_average() -> str:
    """The 1-minute load average: other processes sharing the cores show up in every figure."""
    return f"{os.getloadavg()[0]:.2f}"


def machine_info() -> dict[str, str]:
    import platform

    import psutil

    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "load": load_average(),
    }
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        info["gpu"] = "none (torch not installed)"
    return info


LIBRARIES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "fastapi",
    "uvicorn",
    "grpcio",
    "nats-py",
    "websockets",
    "httpx",
)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions
