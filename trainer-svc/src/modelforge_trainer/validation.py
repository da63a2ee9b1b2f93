"""Checks a training request before anything is queued.

Every problem is reported at once, one FieldViolation per bad field (field names as the public API
spells them; dataset rows as "dataset/line 12/prompt"), in a single InvalidArgument.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.catalog import PROFILES, PROVIDERS, STRATEGIES, STRATEGIES_BY_TASK, TASKS
from modelforge_common.dataset_rows import DatasetReport, validate_file
from modelforge_common.errors import FieldViolation, InvalidArgument, ModelForgeError, NotFound
from modelforge_common.model_paths import model_roots, resolve_local_model
from modelforge_common.training_options import LR_SCHEDULERS, OPTIMIZERS
from modelforge_trainer.config import DEFAULT_DISTRIBUTED, DEFAULT_PROVIDER, DEFAULT_STRATEGY, Hyperparameters, resolve
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.ports import DatasetLookup, MemoryEstimator, MemoryQuery
from modelforge_training.settings import SETTINGS, bound_problems
from modelforge_training.spec import DISTRIBUTED_MODE_NAMES, TrainingJobSpec, world_size
from modelforge_training.strategies import (
    DISTRIBUTED_MODES,
    GPU_ONLY_PROVIDERS,
    SINGLE_PROCESS_PROVIDERS,
    implemented_providers,
    implemented_strategies,
)

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class Problems:
    """Violations grouped under the sentence that explains them (one sentence per bad field or file)."""

    messages: list[str] = field(default_factory=list)
    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_name: str, message: str) -> None:
        self.messages.append(message)
        self.violations.append(FieldViolation(field_name, message))

    def add_group(self, message: str, violations: list[FieldViolation]) -> None:
        self.messages.append(message)
        self.violations.extend(violations)

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument("; ".join(self.messages), self.violations)


def _check_hyperparameters(request: TrainingConfig, problems: Problems) -> None:
    # Every number setting against the bounds its SettingRule declares in common.proto.
    for name, message in bound_problems(request):
        problems.add(name, message)
    if request.HasField("lr_scheduler_type") and request.lr_scheduler_type not in LR_SCHEDULERS:
        problems.add(
            "lr_scheduler_type",
            f"Invalid lr_scheduler_type: {request.lr_scheduler_type}. Must be one of {list(LR_SCHEDULERS)}",
        )
    if request.HasField("optim") and request.optim not in OPTIMIZERS:
        problems.add("optim", f"Invalid optim: {request.optim}. Must be one of {list(OPTIMIZERS)}")
    if request.compute_specs and request.compute_specs not in PROFILES:
        problems.add(
            "compute_specs", f"Invalid compute_specs: {request.compute_specs}. Must be one of {list(PROFILES)}"
        )
    if request.HasField("name") and len(request.name) > 200:
        problems.add("name", "name must be at most 200 characters")


def _check_combination(request: TrainingConfig, device: DeviceInfo, problems: Problems) -> bool:
    """Task, strategy and provider; True when the three are valid together."""
    task = request.task
    strategy = request.strategy or DEFAULT_STRATEGY
    provider = request.provider or DEFAULT_PROVIDER
    ok = True
    if task not in TASKS:
        problems.add("task", f"Invalid task: {task}. Must be one of {list(TASKS)}")
        ok = False
    if strategy not in STRATEGIES:
        problems.add("strategy", f"Invalid strategy: {strategy}. Must be one of {list(STRATEGIES)}")
        ok = False
    if provider not in PROVIDERS:
        problems.add("provider", f"Invalid provider: {provider}. Must be one of {list(PROVIDERS)}")
        ok = False
    if not ok:
        return False
    if strategy not in STRATEGIES_BY_TASK[task]:
        problems.add(
            "strategy",
            f"Strategy {strategy} is not available for {task}. Must be one of {list(STRATEGIES_BY_TASK[task])}",
        )
        return False
    providers = implemented_providers(task, strategy)
    if not providers:
        problems.add(
            "strategy",
            f"Strategy {strategy} for {task} is not supported by this trainer yet. "
            f"Supported strategies for {task}: {implemented_strategies(task)}",
        )
        return False
    if provider not in providers:
        problems.add(
            "provider",
            f"Provider {provider} does not support {strategy} for {task} yet. Supported providers: {list(providers)}",
        )
        return False
    if provider in GPU_ONLY_PROVIDERS and not device.cuda:
        problems.add("provider", f"{provider} requires an NVIDIA GPU")
        return False
    if provider == "unsloth" and not device.unsloth_installed:
        problems.add("provider", "unsloth is not installed in this trainer (install modelforge-training[unsloth])")
        return False
    if strategy == "qlora" and request.HasField("use_4bit") and not request.use_4bit:
        problems.add("use_4bit", "Strategy qlora trains a 4-bit quantized base model: use_4bit must not be false")
        return False
    return True


# Where jobs run: this trainer's own processes, or TrainJobs on Kubeflow Trainer (kubeflow.py).
LOCAL_BACKEND = "local"
KUBEFLOW_BACKEND = "kubeflow"
MAX_PROCESSES_PER_NODE = int(SETTINGS["processes_per_node"].rule.max)
MAX_NODES = int(SETTINGS["num_nodes"].rule.max)


def check_distributed(request: TrainingConfig, device: DeviceInfo, problems: Problems, *, backend: str) -> None:
    """processes_per_node, num_nodes and distributed: a job of several processes needs a provider and
    a strategy that can train that way, and more than one node needs Kubeflow Trainer."""
    # Their bounds are checked with every setting's (_check_hyperparameters).
    if request.HasField("distributed") and request.distributed not in DISTRIBUTED_MODE_NAMES:
        problems.add(
            "distributed",
            f"Invalid distributed: {request.distributed}. Must be one of {list(DISTRIBUTED_MODE_NAMES)}",
        )
        return
    processes = request.processes_per_node or 1
    nodes = request.num_nodes or 1
    if not (1 <= processes <= MAX_PROCESSES_PER_NODE and 1 <= nodes <= MAX_NODES):
        return
    if nodes > 1 and backend != KUBEFLOW_BACKEND:
        problems.add(
            "num_nodes",
            f"num_nodes {nodes} needs the kubeflow backend (MODELFORGE_TRAINER_BACKEND=kubeflow on Kubernetes "
            "with Kubeflow Trainer); this trainer runs jobs on its own node only",
        )
        return
    if device.cuda and backend == LOCAL_BACKEND and processes > max(1, device.gpu_count):
        problems.add(
            "processes_per_node",
            f"processes_per_node {processes} is more than this node's {device.gpu_count} GPU(s): "
            "a GPU job runs one process per GPU",
        )
        return
    if processes * nodes <= 1 and not request.HasField("distributed"):
        return
    provider = request.provider or DEFAULT_PROVIDER
    strategy = request.strategy or DEFAULT_STRATEGY
    mode = request.distributed or DEFAULT_DISTRIBUTED
    field_name = "processes_per_node" if processes > 1 else "num_nodes" if nodes > 1 else "distributed"
    if provider in SINGLE_PROCESS_PROVIDERS:
        problems.add(
            "provider",
            f"Provider {provider} cannot train in several processes (it patches the model for one GPU): "
            f"use provider huggingface for a job of {processes * nodes} processes",
        )
        return
    modes = DISTRIBUTED_MODES.get((request.task, strategy), ())
    if not modes:
        problems.add(
            field_name,
            f"Strategy {strategy} for {request.task} trains in one process only; distributed jobs support "
            f"{sorted({s for (t, s) in DISTRIBUTED_MODES if t == request.task}) or 'no strategy of this task'}",
        )
    elif mode not in modes:
        problems.add(
            "distributed",
            f"Strategy {strategy} cannot train with {mode}"
            + (" (FSDP cannot shard 4-bit quantized weights)" if strategy == "qlora" or request.use_4bit else "")
            + f"; supported: {list(modes)}",
        )
    elif mode == "fsdp" and request.use_4bit:
        problems.add("use_4bit", "FSDP cannot shard 4-bit quantized weights: use distributed ddp or use_4bit false")


def resolve_model_name(model_name: str, data_dir: Path, problems: Problems) -> tuple[str, bool]:
    """(the name to load, whether it is a local folder). A local folder must hold config.json; anything
    else must look like a Hub id "org/name"."""
    name = model_name.strip()
    if not name:
        problems.add("model_name", "model_name is required: a Hub id such as 'org/name' or a local model folder")
        return name, False
    # Only folders inside the model roots (MODELFORGE_MODEL_ROOTS) are used; any other path gets one
    # refusal whether it exists or not.
    try:
        folder = resolve_local_model(name, model_roots(data_dir), data_dir=data_dir)
    except InvalidArgument as refused:
        problems.add("model_name", refused.message)
        return name, False
    if folder is not None:
        if not (folder / "config.json").is_file():
            problems.add("model_name", f"Model folder {folder} has no config.json")
            return name, False
        return str(folder), True
    if not HUB_ID.match(name):
        problems.add(
            "model_name",
            f"Invalid model_name: {name}. Use a Hub id such as 'org/name' or an existing local model folder",
        )
    return name, False


def dataset_violations(report: DatasetReport, field: str = "dataset") -> list[FieldViolation]:
    found = []
    for issue in report.issues:
        parts = [field]
        if issue.line:
            parts.append(f"line {issue.line}")
        if issue.field:
            parts.append(issue.field)
        found.append(FieldViolation("/".join(parts), issue.message))
    return found


def _read_report(path: str, task: str, strategy: str) -> DatasetReport:
    # Through the dataset's stored column mapping, as the worker's load_rows reads it.
    return validate_file(path, task=task, strategy=strategy)


async def check_dataset(
    name: str, task: str, strategy: str, datasets: DatasetLookup, problems: Problems, field: str = "dataset"
) -> str:
    """Resolves the dataset through the registry and checks every row; returns its absolute path.
    `field` names the request field in the problems (dataset, or eval_dataset)."""
    if not name.strip():
        problems.add(field, f"{field} is required: an uploaded dataset's filename or a path inside the data dir")
        return ""
    try:
        info = await datasets.get_dataset(name)
    except NotFound:
        problems.add(field, f"Dataset validation failed: File not found: {name}")
        return ""
    except InvalidArgument as exc:
        problems.add(field, f"Dataset validation failed: {exc.message}")
        return ""
    try:
        report = await asyncio.to_thread(_read_report, info.path, task, strategy)
    except FileNotFoundError:
        problems.add(field, f"Dataset validation failed: File not found: {info.path}")
        return ""
    if not report.valid:
        problems.add_group(f"Dataset validation failed: {report.summary()}", dataset_violations(report, field))
    return info.path


def check_strategy_settings(config: TrainingConfig) -> None:
    """Settings a strategy needs beyond the plain ranges."""
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    if config.strategy == "rlhf" and batch % 2:
        message = (
            "Strategy rlhf compares 2 or 4 sampled answers per prompt: per_device_train_batch_size x "
            f"gradient_accumulation_steps must be even, got {batch}"
        )
        raise InvalidArgument(message, [FieldViolation("per_device_train_batch_size", message)])


def _format_bytes(value: int) -> str:
    return f"{value / 1024**3:.2f} GiB"


def training_precision(config: TrainingConfig, device: DeviceInfo) -> str:
    """What the worker will train in (modelforge_training/runtime.py decides the same way)."""
    if not device.cuda or not config.bf16:
        return "fp32"
    return "bf16" if device.bf16 else "fp16"


async def check_memory(
    config: TrainingConfig, estimator: MemoryEstimator | None, device: DeviceInfo, force: bool
) -> None:
    """Refuses a job the hardware service says will not fit (unless forced); best effort."""
    if estimator is None:
        return
    query = MemoryQuery(
        model_name=config.model_name,
        strategy=config.strategy,
        task=config.task,
        lora_r=config.lora_r,
        batch_size=config.per_device_train_batch_size,
        max_seq_length=config.max_seq_length,
        precision=training_precision(config, device),
        use_4bit=config.use_4bit,
        gradient_checkpointing=(
            config.gradient_checkpointing if config.HasField("gradient_checkpointing") else device.cuda
        ),
        provider=config.provider,
        lora_dropout=config.lora_dropout,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        providers=("huggingface", "unsloth") if device.cuda and device.unsloth_installed else ("huggingface",),
        world_size=world_size(config),
        distributed=config.distributed,
    )
    try:
        estimate = await estimator.estimate_memory(query)
    except ModelForgeError as exc:
        log.warning("memory estimate unavailable, starting without it: %s", exc.message)
        return
    if estimate.fits or force:
        if not estimate.fits:
            log.warning("starting a job the estimate says will not fit (force): %s", estimate.message)
        return
    # The hardware service's message names the largest parts and the nearest settings that fit.
    advice = estimate.message.strip() or (
        "Lower the batch size, sequence length or LoRA rank, or use 4-bit quantization."
    )
    raise InvalidArgument(
        f"Not enough memory: the job is estimated to need {_format_bytes(estimate.total_bytes)} "
        f"({estimate.total_bytes} bytes) but {estimate.device} has {_format_bytes(estimate.available_bytes)} "
        f"({estimate.available_bytes} bytes) available. {advice} Or set force to start anyway"
    )


async def validate_request(
    request: TrainingConfig,
    defaults: Hyperparameters,
    *,
    data_dir: Path,
    device: DeviceInfo,
    datasets: DatasetLookup,
    estimator: MemoryEstimator | None = None,
    backend: str = LOCAL_BACKEND,
) -> TrainingJobSpec:
    """Everything a start request must pass; returns the job's spec (every setting resolved) or raises
    InvalidArgument."""
    problems = Problems()
    combination_ok = _check_combination(request, device, problems)
    _check_hyperparameters(request, problems)
    if combination_ok:
        check_distributed(request, device, problems, backend=backend)
    model_name, local = resolve_model_name(request.model_name, data_dir, problems)
    dataset_path = eval_dataset_path = ""
    if combination_ok:
        strategy = request.strategy or DEFAULT_STRATEGY
        dataset_path = await check_dataset(request.dataset, request.task, strategy, datasets, problems)
        if request.HasField("eval_dataset"):
            eval_dataset_path = await check_dataset(
                request.eval_dataset, request.task, strategy, datasets, problems, field="eval_dataset"
            )
    problems.raise_if_any()
    spec = resolve(
        request,
        defaults,
        model_name=model_name,
        local_model=local,
        dataset_path=dataset_path,
        eval_dataset_path=eval_dataset_path,
    )
    config = spec.config
    check_strategy_settings(config)
    if config.max_steps <= 0:
        config.max_steps = -1
    if not device.cuda:
        config.bf16 = False  # the CPU path trains in fp32
    await check_memory(config, estimator, device, request.force)
    return spec
