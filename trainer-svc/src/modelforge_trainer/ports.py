"""What the trainer needs from other services, as plain interfaces (clients.py implements them over gRPC,
tests with fakes)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from modelforge.v1 import registry_pb2


@dataclass(frozen=True)
class DatasetInfo:
    filename: str
    path: str  # absolute path of the JSONL file
    num_examples: int = 0


@dataclass(frozen=True)
class MemoryQuery:
    model_name: str
    strategy: str
    task: str
    lora_r: int
    batch_size: int
    max_seq_length: int
    precision: str  # bf16 | fp16 | fp32
    use_4bit: bool
    gradient_checkpointing: bool
    # huggingface | unsloth: each holds different tensors at the peak.
    provider: str = "huggingface"
    lora_dropout: float = 0.05
    # Kept by the hardware service's proposals of a smaller per-device batch.
    gradient_accumulation_steps: int = 1
    # Providers this trainer can run: the hardware service proposes no other.
    providers: tuple[str, ...] = ()
    # A job of several processes: the estimate is one process's (what each GPU holds).
    world_size: int = 1
    distributed: str = ""


@dataclass(frozen=True)
class MemoryEstimate:
    fits: bool
    total_bytes: int
    available_bytes: int
    device: str
    message: str = ""


@dataclass
class ModelRecord:
    """A finished job's model, as the registry stores it."""

    name: str
    base_model: str
    task: str
    strategy: str
    provider: str
    path: str
    config: dict[str, Any]
    training_params: dict[str, float]
    metrics: dict[str, float]
    job_id: str
    adapter_type: str = "lora"
    # registry.proto's Lineage as JSON (lineage.build_lineage); None when not recorded.
    lineage: dict[str, Any] | None = None


class DatasetLookup(Protocol):
    async def get_dataset(self, name: str) -> DatasetInfo:
        """Resolves a filename or a path inside the data dir; raises errors.NotFound when unknown and
        errors.Unavailable when the registry cannot be reached."""
        ...


class MemoryEstimator(Protocol):
    async def estimate_memory(self, query: MemoryQuery) -> MemoryEstimate:
        """Raises errors.Unavailable (or any ModelForgeError) when no estimate can be had."""
        ...


class ModelRegistrar(Protocol):
    async def register_model(self, record: ModelRecord) -> str:
        """Registers the model and returns its model_id."""
        ...


# A job of record as registry-svc stores it, shared by every replica: registry.proto's Job itself
# (one schema for the record; convert.py reads its times and request, and builds partial updates).
JobRecord = registry_pb2.Job


class JobStore(Protocol):
    """Jobs of record (registry-svc). Errors are domain errors: FailedPrecondition when an expected
    status did not match, NotFound, Unavailable."""

    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Stores a new job; when its idempotency key is taken, returns that job and False."""
        ...

    async def get_job(self, job_id: str) -> JobRecord: ...

    async def list_jobs(
        self, statuses: Collection[str], limit: int, offset: int, *, in_progress_first: bool = False
    ) -> tuple[list[JobRecord], int]:
        """Newest first, and the count of all matches; with in_progress_first the jobs in progress
        (queued, running, registering) come before the others, each group newest first."""
        ...

    async def update_job(
        self, job_id: str, changes: dict[str, Any], expected_statuses: Collection[str] = ()
    ) -> JobRecord:
        """Sets the named fields; with expected_statuses only while the stored status is one of them."""
        ...


class JobQueue(Protocol):
    """The durable queue every replica consumes (queue.py: NATS JetStream)."""

    async def enqueue(self, job_id: str) -> None:
        """Raises errors.Unavailable when the job could not be queued."""
        ...

    async def request_stop(self, job_id: str) -> bool:
        """Asks the replica that runs the job to stop it; False when no live replica runs it."""
        ...

    async def running_elsewhere(self, job_id: str) -> bool:
        """True when a live replica still runs the job."""
        ...

    async def last_event_seq(self, job_id: str) -> int:
        """The highest event seq published for the job so far (0 when unknown)."""
        ...


class Delivery(Protocol):
    job_id: str
    redelivered: bool

    async def in_progress(self) -> None: ...

    async def ack(self) -> bool: ...
