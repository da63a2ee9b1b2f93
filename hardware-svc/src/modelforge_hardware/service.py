"""hardware-svc's domain API: the node's hardware, recommendations, memory estimates and model
look-ups. No grpc here; blocking work (NVML, psutil, Hub requests) runs in worker threads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from modelforge.v1 import hardware_pb2
from modelforge_common.catalog import STRATEGIES, STRATEGIES_BY_TASK, TASKS
from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_hardware.distributed import DDP, FSDP, MAX_WORLD_SIZE, SINGLE_PROCESS, Distribution
from modelforge_hardware.estimator import PRECISION_BYTES, PROVIDERS, MemoryEstimate, TrainingJob
from modelforge_hardware.fit import MOST_FREE_GPU, Target, choose_target, judge
from modelforge_hardware.model_shape import ConfigError, ModelShape, infer_task, shape_from_config
from modelforge_hardware.model_source import ModelSource, hub_unreachable
from modelforge_hardware.probe import GpuProbe, GpuReading, SystemProbe, SystemReading, torch_version
from modelforge_hardware.profiles import best_gpu, classify
from modelforge_hardware.proposals import MAX_BATCH_SIZE as MAX_PROPOSED_BATCH
from modelforge_hardware.proposals import Proposal, max_batch_size, propose
from modelforge_hardware.recommendations import Recommendation, Recommendations, TrainingDefaults

T = TypeVar("T")
DEFAULT_TASK = "text-generation"
DEFAULT_STRATEGY = "sft"
FULL_FINE_TUNING = -1
MAX_LORA_R = 4096
MAX_BATCH_SIZE = 4096
MAX_SEQ_LENGTH = 1 << 20
MAX_ACCUMULATION = 1 << 16
DEFAULT_PROVIDER = "huggingface"
# When a request names no lora_dropout: 0, as the measured runs and unsloth's recipe train (peft then keeps
# no dropped-out copies). trainer-svc's start-time check always passes the job's own value.
DEFAULT_LORA_DROPOUT = 0.0


@dataclass(frozen=True)
class HardwareInfo:
    gpus: tuple[GpuReading, ...]
    driver_version: str
    cuda_driver_version: str
    system: SystemReading
    # "cuda" or "cpu".
    device_type: str
    profile: str
    torch_version: str

    @property
    def bf16_supported(self) -> bool:
        best = best_gpu(self.gpus)
        return best is not None and best.supports_bf16


@dataclass(frozen=True)
class MemoryRequest:
    """EstimateMemory's input. Zero / empty fields take this node's defaults for the task: lora_r,
    batch_size, max_seq_length and precision from the profile's training defaults, strategy "sft",
    task from the model's family. lora_r = -1 estimates full fine-tuning."""

    model_name: str
    strategy: str = ""
    task: str = ""
    lora_r: int = 0
    batch_size: int = 0
    max_seq_length: int = 0
    precision: str = ""
    use_4bit: bool = False
    gradient_checkpointing: bool = False
    gpu_index: int = MOST_FREE_GPU
    # "" = huggingface.
    provider: str = ""
    # None: 0 (the trainer's start-time check passes the job's own value).
    lora_dropout: float | None = None
    # 0 = 1; the proposals keep batch x accumulation.
    gradient_accumulation_steps: int = 0
    # Providers the caller can train with; proposals offer no other. Empty: any.
    providers: tuple[str, ...] = ()
    # A job of several processes: the estimate is one process's (distributed.py). 0 = 1; "" = ddp.
    world_size: int = 0
    distributed: str = ""


@dataclass(frozen=True)
class MemoryAnswer:
    estimate: MemoryEstimate
    fits: bool
    available_bytes: int
    device: str
    message: str
    # The settings the estimate used, after defaults.
    job: TrainingJob
    task: str
    # The largest per-device batch that fits with the other settings unchanged (0: not even 1).
    max_batch_size: int = 0
    # When it does not fit: the nearest settings that do, nearest first.
    proposals: tuple[Proposal, ...] = ()
    gradient_accumulation_steps: int = 1
    # The job's processes and how they share the model: the estimate is one process's.
    distribution: Distribution = SINGLE_PROCESS


def _validate(request: MemoryRequest) -> list[FieldViolation]:
    violations = []
    if not request.model_name.strip():
        violations.append(FieldViolation("model_name", "is required"))
    if request.strategy and request.strategy not in STRATEGIES:
        violations.append(FieldViolation("strategy", f"must be one of {', '.join(STRATEGIES)}"))
    if not 0 <= request.world_size <= MAX_WORLD_SIZE:
        violations.append(FieldViolation("world_size", f"must be between 1 and {MAX_WORLD_SIZE}"))
    if request.distributed not in ("", DDP, FSDP):
        violations.append(FieldViolation("distributed", f"must be {DDP} or {FSDP}"))
    if request.task and request.task not in TASKS:
        violations.append(FieldViolation("task", f"must be one of {', '.join(TASKS)}"))
    if request.precision and request.precision not in PRECISION_BYTES:
        violations.append(FieldViolation("precision", f"must be one of {', '.join(PRECISION_BYTES)}"))
    if not FULL_FINE_TUNING <= request.lora_r <= MAX_LORA_R:
        violations.append(
            FieldViolation("lora_r", f"must be 1..{MAX_LORA_R}, 0 for the default, -1 for full fine-tuning")
        )
    if not 0 <= request.batch_size <= MAX_BATCH_SIZE:
        violations.append(FieldViolation("batch_size", f"must be 1..{MAX_BATCH_SIZE} (0 for the default)"))
    if not 0 <= request.max_seq_length <= MAX_SEQ_LENGTH:
        violations.append(FieldViolation("max_seq_length", f"must be 1..{MAX_SEQ_LENGTH} (0 for the default)"))
    if request.provider and request.provider not in PROVIDERS:
        violations.append(FieldViolation("provider", f"must be one of {', '.join(PROVIDERS)}"))
    if request.lora_dropout is not None and not 0 <= request.lora_dropout < 1:
        violations.append(FieldViolation("lora_dropout", "must be at least 0 and below 1"))
    if not 0 <= request.gradient_accumulation_steps <= MAX_ACCUMULATION:
        violations.append(
            FieldViolation("gradient_accumulation_steps", f"must be 1..{MAX_ACCUMULATION} (0 for 1)")
        )
    if request.gpu_index < MOST_FREE_GPU:
        violations.append(FieldViolation("gpu_index", "must be -1 (most free memory) or a GPU index"))
    four_bit = request.use_4bit or request.strategy == "qlora"
    if four_bit and request.lora_r == FULL_FINE_TUNING:
        violations.append(FieldViolation("lora_r", "4-bit training (qlora, use_4bit) trains LoRA adapters: lora_r > 0"))
    return violations


def _check_strategy_for_task(strategy: str, task: str) -> None:
    if strategy not in STRATEGIES_BY_TASK[task]:
        allowed = ", ".join(STRATEGIES_BY_TASK[task])
        raise InvalidArgument(
            f"strategy {strategy} does not apply to {task}",
            [FieldViolation("strategy", f"{task} trains with {allowed}")],
        )


def _shape(config: dict[str, Any], task: str, model_name: str) -> ModelShape:
    try:
        return shape_from_config(config, task)
    except ConfigError as exc:
        raise InvalidArgument(
            f"cannot size {model_name}: {exc}", [FieldViolation("model_name", f"config.json: {exc}")]
        ) from exc


def resolve_job(request: MemoryRequest, defaults: TrainingDefaults, target: Target, strategy: str) -> TrainingJob:
    if request.precision:
        precision = request.precision
    elif defaults.bf16:
        precision = "bf16"
    else:
        precision = "fp16" if target.on_gpu else "fp32"
    return TrainingJob(
        strategy=strategy,
        lora_r=request.lora_r or defaults.lora_r,
        batch_size=request.batch_size or defaults.per_device_train_batch_size,
        seq_len=request.max_seq_length or defaults.max_seq_length,
        precision=precision,
        use_4bit=request.use_4bit or strategy == "qlora",
        gradient_checkpointing=request.gradient_checkpointing,
        provider=request.provider or DEFAULT_PROVIDER,
        lora_dropout=DEFAULT_LORA_DROPOUT if request.lora_dropout is None else request.lora_dropout,
        on_gpu=target.on_gpu,
    )


def unsloth_available(shape: ModelShape, target: Target) -> bool:
    """unsloth trains Llama-style causal LMs, on an NVIDIA GPU only."""
    return target.on_gpu and shape.family == "decoder" and not shape.generic


def proposals_sentence(proposals: tuple[Proposal, ...]) -> str:
    """The proposals in words, each with its settings as start-request fields (name=value)."""
    if not proposals:
        return "No settings of this model fit: choose a smaller model or a larger device."
    items = []
    for number, proposal in enumerate(proposals, start=1):
        fields = " ".join(
            f"{name}={str(getattr(proposal.settings, name)).lower()}" for name in proposal.changed
        )
        total, needed = proposal.total_bytes / (1 << 30), proposal.needed_bytes / (1 << 30)
        peak = f"estimated {total:.1f} GiB" + (f" ({needed:.1f} GiB for the job)" if needed < total else "")
        items.append(f"({number}) {fields}: {proposal.description}, {peak}")
    return "Settings that fit: " + "; ".join(items) + "."


class HardwareService:
    def __init__(
        self,
        gpu_probe: GpuProbe,
        system_probe: SystemProbe,
        recommendations: Recommendations,
        models: ModelSource,
        read_torch_version: Callable[[], str] = torch_version,
    ) -> None:
        self._gpu_probe = gpu_probe
        self._system_probe = system_probe
        self._recommendations = recommendations
        self._models = models
        self._read_torch_version = read_torch_version
        # A whole Hub look-up (model_info, then config.json) is bounded even if a request stalls.
        self.hub_deadline_s = 4 * models.timeout_s

    def _read_hardware(self) -> HardwareInfo:
        inventory = self._gpu_probe.read()
        system = self._system_probe.read()
        profile = classify(inventory.gpus, system.ram_total_bytes)
        return HardwareInfo(
            gpus=inventory.gpus,
            driver_version=inventory.driver_version,
            cuda_driver_version=inventory.cuda_driver_version,
            system=system,
            device_type=profile.device_type,
            profile=profile.name,
            torch_version=self._read_torch_version(),
        )

    async def hardware(self) -> HardwareInfo:
        return await asyncio.to_thread(self._read_hardware)

    def _recommendation(self, task: str, hardware: HardwareInfo) -> Recommendation:
        return self._recommendations.for_task(task, hardware.profile, hardware.device_type, hardware.bf16_supported)

    async def recommendations(self, task: str) -> tuple[Recommendation, HardwareInfo]:
        """Models and defaults for `task` ("" = text-generation, the wizard's default)."""
        task = task or DEFAULT_TASK
        if task not in TASKS:
            raise InvalidArgument(
                f"unknown task {task!r}", [FieldViolation("task", f"must be one of {', '.join(TASKS)}")]
            )
        hardware = await self.hardware()
        return self._recommendation(task, hardware), hardware

    async def _hub_call(self, call: Callable[[str], T], name: str) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(call, name), timeout=self.hub_deadline_s)
        except TimeoutError as exc:
            raise hub_unreachable(f"no answer within {self.hub_deadline_s:g} s") from exc

    async def model_config(self, model_name: str) -> dict[str, Any]:
        """config.json of a local folder or Hub repo (PERMISSION_DENIED / UNAVAILABLE as DescribeModel)."""
        return await self._hub_call(self._models.load_config, model_name.strip())

    async def estimate_memory(self, request: MemoryRequest) -> MemoryAnswer:
        violations = _validate(request)
        if violations:
            raise InvalidArgument("invalid memory estimate request", violations)
        strategy = request.strategy or DEFAULT_STRATEGY
        if request.task:
            _check_strategy_for_task(strategy, request.task)
        hardware = await self.hardware()
        target = choose_target(hardware.gpus, hardware.system, request.gpu_index)
        config = await self.model_config(request.model_name)
        task = request.task or infer_task(_shape(config, "", request.model_name))
        shape = _shape(config, task, request.model_name)
        _check_strategy_for_task(strategy, task)
        job = resolve_job(request, self._recommendation(task, hardware).defaults, target, strategy)
        if job.unsloth and not target.on_gpu:
            raise InvalidArgument(
                "unsloth requires an NVIDIA GPU", [FieldViolation("provider", "unsloth requires an NVIDIA GPU")]
            )
        accumulation = request.gradient_accumulation_steps or 1
        # Fit, proposals and the largest batch all judge one process's estimate.
        distribution = Distribution(request.world_size or 1, request.distributed or DDP)
        result = distribution.estimate(shape, job)
        fit = judge(result, target)
        proposals: tuple[Proposal, ...] = ()
        message = fit.message
        if not fit.fits:
            unsloth = unsloth_available(shape, target) and (not request.providers or "unsloth" in request.providers)
            proposals = tuple(propose(shape, job, target, accumulation, unsloth, distribution))
            message += " " + proposals_sentence(proposals)
        return MemoryAnswer(
            estimate=result,
            fits=fit.fits,
            available_bytes=target.available_bytes,
            device=target.device,
            message=message,
            job=job,
            task=task,
            max_batch_size=max_batch_size(shape, job, target, limit=MAX_PROPOSED_BATCH, distribution=distribution),
            proposals=proposals,
            gradient_accumulation_steps=accumulation,
            distribution=distribution,
        )

    async def describe_model(self, model_name: str) -> hardware_pb2.DescribeModelResponse:
        return await self._hub_call(self._models.describe, model_name)

