# ruff: noqa: N802 - servicer methods carry the gRPC method names
"""In-process fake services: real grpc.aio servers (build_server: the real error interceptor and
health service) with small canned domain behaviour, raising modelforge_common.errors so the
gateway sees the status codes a real service would send.

The servers run on their own event loop in a background thread, so both async httpx tests and
the synchronous TestClient (which runs the app on another loop) can call them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import httpx
from fastapi import FastAPI
from google.protobuf import struct_pb2, timestamp_pb2

from modelforge.v1 import (
    common_pb2,
    hardware_pb2,
    hardware_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from modelforge_common.catalog import TASKS
from modelforge_common.dataset_rows import validate_lines
from modelforge_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from modelforge_common.grpc_server import build_server, mark_serving, service_name
from modelforge_common.stream_session import StreamsSession
from modelforge_common.testing import free_port
from modelforge_gateway.main import create_app
from modelforge_gateway.settings import GatewaySettings

T = TypeVar("T")

GIB = 1024**3
CREATED = timestamp_pb2.Timestamp(seconds=1_710_513_022)  # 2024-03-15T14:30:22Z


def _task_violation(task: str) -> InvalidArgument:
    message = f"Invalid task: {task}. Must be one of {list(TASKS)}"
    return InvalidArgument(message, [FieldViolation("task", message)])


def _issue_field(line: int, field_name: str) -> str:
    """registry-svc's convention: "file", "file/line N" or "file/line N/<field>"."""
    parts = ["file", f"line {line}" if line else "", field_name]
    return "/".join(p for p in parts if p)


def make_model(number: int, task: str = "text-generation", **overrides: Any) -> registry_pb2.Model:
    config = struct_pb2.Struct()
    config.update({"lora_r": 64, "lora_alpha": 128, "num_train_epochs": 3, "learning_rate": 2e-4})
    params = struct_pb2.Struct()
    params.update({"num_epochs": 3, "batch_size": 4, "learning_rate": 2e-4})
    model = registry_pb2.Model(
        id=number,
        model_id=f"model_20240315_14302{number}",
        name=f"tiny-llama-{number}",
        base_model="/data/models/tiny-llama",
        task=task,
        strategy="qlora",
        provider="huggingface",
        created_at=CREATED,
        size_mb=450.5,
        path=f"/data/models/model_{number}",
        config=config,
        training_params=params,
        metrics={"final_loss": 0.234, "perplexity": 1.263},
        job_id=f"train_{number}",
        adapter_type="lora",
        file_sha256={"adapter_model.safetensors": "ab" * 32},
    )
    for key, value in overrides.items():
        setattr(model, key, value)
    return model


class FakeTrainer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.job: common_pb2.TrainingJob | None = None
        self.started: list[common_pb2.TrainingConfig] = []
        self.known_datasets = {"train.jsonl"}
        self.fail_status_with: grpc.StatusCode | None = None
        self.fail_details: str | None = None  # the message sent with fail_status_with
        self.metadata: list[dict[str, Any]] = []
        self.timeouts: list[float | None] = []
        self.queued: dict[str, common_pb2.TrainingJob] = {}  # jobs submitted through /api/jobs
        self.by_idempotency_key: dict[str, str] = {}
        # GetTrainingStatus calls received, and a gate each waits on when set (read-cache tests).
        self.status_calls = 0
        self.status_gate: asyncio.Event | None = None
        # A worker slower to save than the trainer's wait: StopTraining answers with the job running.
        self.stop_outlasts_the_wait = False

    def _record(self, context: grpc.aio.ServicerContext) -> None:
        self.metadata.append(dict(context.invocation_metadata() or ()))
        self.timeouts.append(context.time_remaining())

    async def StartTraining(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._record(context)
        config = request.config
        if config.task not in TASKS:
            raise _task_violation(config.task)
        if config.dataset not in self.known_datasets:
            raise InvalidArgument(
                "Dataset validation failed: File not found",
                [FieldViolation("dataset", f"no uploaded dataset named {config.dataset}")],
            )
        if self.job is not None and self.job.status in (common_pb2.JOB_STATUS_RUNNING, common_pb2.JOB_STATUS_QUEUED):
            raise FailedPrecondition(f"Training job {self.job.job_id} is already running")
        self.started.append(config)
        self.job = common_pb2.TrainingJob(
            job_id=f"train_{len(self.started):06d}",
            status=common_pb2.JOB_STATUS_RUNNING,
            total_epochs=int(config.num_train_epochs or 1),
            message="Starting",
            config=config,
        )
        return trainer_pb2.StartTrainingResponse(job=self.job)

    async def SubmitTrainingJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._record(context)
        known = self.by_idempotency_key.get(request.idempotency_key)
        if request.idempotency_key and known:
            return trainer_pb2.SubmitTrainingJobResponse(job=self.queued[known], created=False)
        if request.config.task not in TASKS:
            raise _task_violation(request.config.task)
        job = common_pb2.TrainingJob(
            job_id=f"job_{len(self.queued) + 1:06d}",
            status=common_pb2.JOB_STATUS_QUEUED,
            message="Queued",
            owner=request.owner,
            config=request.config,
            created_at=CREATED,
            last_seq=1,
        )
        self.queued[job.job_id] = job
        if request.idempotency_key:
            self.by_idempotency_key[request.idempotency_key] = job.job_id
        return trainer_pb2.SubmitTrainingJobResponse(job=job, created=True)

    async def GetTrainingStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._record(context)
        self.status_calls += 1
        if self.status_gate is not None:
            await self.status_gate.wait()
        if self.fail_status_with is not None:
            details = self.fail_details or f"fake failure {self.fail_status_with.name}"
            await context.abort(self.fail_status_with, details)
        if request.job_id in self.queued:
            return trainer_pb2.GetTrainingStatusResponse(has_job=True, job=self.queued[request.job_id])
        if request.job_id and (self.job is None or self.job.job_id != request.job_id):
            raise NotFound(f"no job {request.job_id}")
        if self.job is None:
            return trainer_pb2.GetTrainingStatusResponse(has_job=False)
        return trainer_pb2.GetTrainingStatusResponse(has_job=True, job=self.job)

    async def StopTraining(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._record(context)
        queued = self.queued.get(request.job_id)
        if queued is not None:
            if queued.status != common_pb2.JOB_STATUS_QUEUED:
                raise FailedPrecondition(f"Training job {request.job_id} is not running")
            queued.status = common_pb2.JOB_STATUS_STOPPED
            return trainer_pb2.StopTrainingResponse(job=queued)
        if request.job_id and (self.job is None or self.job.job_id != request.job_id):
            raise NotFound(f"no job {request.job_id}")
        if self.job is None or self.job.status not in (common_pb2.JOB_STATUS_RUNNING, common_pb2.JOB_STATUS_QUEUED):
            raise FailedPrecondition("No training in progress")
        if not self.stop_outlasts_the_wait:
            self.job.status = common_pb2.JOB_STATUS_STOPPED
        return trainer_pb2.StopTrainingResponse(job=self.job)

    async def ResetTrainingStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if self.job is not None and self.job.status == common_pb2.JOB_STATUS_RUNNING:
            raise FailedPrecondition("A job is running; stop it first")
        self.job = None
        return trainer_pb2.ResetTrainingStatusResponse()

    async def ListTrainingJobs(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        jobs = [*reversed(self.queued.values()), *([self.job] if self.job else [])]
        matching = [job for job in jobs if not request.statuses or job.status in request.statuses]
        end = request.offset + (request.limit or len(matching))
        return trainer_pb2.ListTrainingJobsResponse(jobs=matching[request.offset : end], total=len(matching))


class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):
    MAX_UPLOAD_BYTES = 256 * 1024

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.models: dict[int, registry_pb2.Model] = {1: make_model(1), 2: make_model(2, task="summarization")}
        self.datasets: dict[str, registry_pb2.Dataset] = {}
        self.datasets_in_use: set[str] = set()  # DeleteDataset answers FAILED_PRECONDITION for these
        self.sessions: dict[str, registry_pb2.Session] = {}
        self.upload_messages: list[int] = []  # bytes per chunk message, for the streaming test
        self.registered: list[registry_pb2.Model] = []
        self.register_fails_with: grpc.StatusCode | None = None
        # Folders under models/ that exist (as inference's merges write them); discards asked for.
        self.folders: set[str] = set()
        self.discarded: list[str] = []
        # ListModels calls received, and a gate each waits on when set (read-cache tests).
        self.list_models_calls = 0
        self.list_models_gate: asyncio.Event | None = None
        # GetModel calls received, and a gate each waits on when set (playground lookup cache tests).
        self.get_model_calls = 0
        self.get_model_gate: asyncio.Event | None = None

    def _find(self, key: str) -> registry_pb2.Model:
        for model in self.models.values():
            if key in (str(model.id), model.model_id):
                return model
        raise NotFound(f"no model with id {key!r}")

    async def GetModel(self, request: Any, context: Any) -> Any:
        self.get_model_calls += 1
        if self.get_model_gate is not None:
            await self.get_model_gate.wait()
        return registry_pb2.GetModelResponse(model=self._find(request.id))

    async def ListModels(self, request: Any, context: Any) -> Any:
        self.list_models_calls += 1
        if self.list_models_gate is not None:
            await self.list_models_gate.wait()
        models = [m for m in self.models.values() if not request.task or m.task == request.task]
        return registry_pb2.ListModelsResponse(models=models, total=len(models))

    async def RegisterModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = request.model
        self.registered.append(model)
        if self.register_fails_with is not None:
            await context.abort(self.register_fails_with, "fake registration failure")
        if any(m.name == model.name for m in self.models.values()):
            raise AlreadyExists(f"Model name '{model.name}' is already taken")
        number = max(self.models, default=0) + 1
        stored = registry_pb2.Model()
        stored.CopyFrom(model)
        stored.id = number
        stored.model_id = f"model_merged_{number}"
        stored.created_at.CopyFrom(CREATED)
        self.models[number] = stored
        return registry_pb2.RegisterModelResponse(model=stored)

    async def DiscardModelFolder(self, request: Any, context: Any) -> Any:
        if any(m.path == request.path for m in self.models.values()):
            raise FailedPrecondition(f"Model folder {request.path} belongs to a registered model")
        self.discarded.append(request.path)
        removed = request.path in self.folders
        self.folders.discard(request.path)
        return registry_pb2.DiscardModelFolderResponse(removed=removed)

    async def DeleteModel(self, request: Any, context: Any) -> Any:
        model = self._find(request.id)
        del self.models[model.id]
        return registry_pb2.DeleteModelResponse(model=model)

    async def UploadDataset(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        filename = ""
        content = bytearray()
        async for message in request_iterator:
            if message.WhichOneof("part") == "filename":
                filename = message.filename
            else:
                self.upload_messages.append(len(message.chunk))
                content.extend(message.chunk)
                if len(content) > self.MAX_UPLOAD_BYTES:
                    raise ResourceExhausted("Dataset exceeds the registry's size limit")
        if not filename.endswith(".jsonl"):
            raise InvalidArgument("Dataset must be a .jsonl file", [FieldViolation("file", "must end in .jsonl")])
        report = validate_lines(bytes(content))
        if not report.valid:
            violations = [FieldViolation(_issue_field(i.line, i.field), i.message) for i in report.issues]
            raise InvalidArgument(f"Dataset validation failed: {report.summary()}", violations)
        dataset = registry_pb2.Dataset(
            filename=filename,
            num_examples=report.num_examples,
            size_bytes=len(content),
            uploaded_at=CREATED,
            path=f"/data/datasets/{filename}",
            valid=True,
        )
        self.datasets[filename] = dataset
        return registry_pb2.UploadDatasetResponse(dataset=dataset)

    async def ListDatasets(self, request: Any, context: Any) -> Any:
        return registry_pb2.ListDatasetsResponse(datasets=list(self.datasets.values()))

    async def GetDataset(self, request: Any, context: Any) -> Any:
        if request.name not in self.datasets:
            raise NotFound(f"no dataset {request.name}")
        return registry_pb2.GetDatasetResponse(dataset=self.datasets[request.name])

    async def DeleteDataset(self, request: Any, context: Any) -> Any:
        if request.name not in self.datasets:
            raise NotFound(f"Dataset {request.name} not found")
        if request.name in self.datasets_in_use:
            raise FailedPrecondition(f"Dataset {request.name} is used by unfinished job(s) train_1")
        return registry_pb2.DeleteDatasetResponse(dataset=self.datasets.pop(request.name))

    async def GetSession(self, request: Any, context: Any) -> Any:
        if request.session_id not in self.sessions:
            raise NotFound(f"no session {request.session_id}")
        return registry_pb2.GetSessionResponse(session=self.sessions[request.session_id])

    async def UpdateSession(self, request: Any, context: Any) -> Any:
        session = self.sessions.setdefault(request.session_id, registry_pb2.Session(session_id=request.session_id))
        for name in ("task", "selected_model", "is_custom_model"):
            if request.HasField(name):
                setattr(session, name, getattr(request, name))
        return registry_pb2.UpdateSessionResponse(session=session)


class FakeHardware(hardware_pb2_grpc.HardwareServiceServicer):
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.with_gpu = False
        self.estimates: list[hardware_pb2.EstimateMemoryRequest] = []
        self.describe_timeouts: list[float | None] = []

    def info(self) -> hardware_pb2.HardwareInfo:
        gpus = [hardware_pb2.Gpu(index=0, name="NVIDIA H100", total_memory_bytes=80 * GIB, free_memory_bytes=79 * GIB)]
        return hardware_pb2.HardwareInfo(
            gpus=gpus if self.with_gpu else [],
            cuda_driver_version="12.6" if self.with_gpu else "",
            ram_total_bytes=16 * GIB,
            ram_available_bytes=12 * GIB,
            disk_free_bytes=250 * GIB + GIB // 2,
            cpu_cores=8,
            device_type="cuda" if self.with_gpu else "cpu",
            profile="high_end" if self.with_gpu else "low_end",
            torch_version="2.13.0",
        )

    async def GetHardware(self, request: Any, context: Any) -> Any:
        return hardware_pb2.GetHardwareResponse(hardware=self.info())

    async def GetRecommendations(self, request: Any, context: Any) -> Any:
        if request.task not in TASKS:
            raise _task_violation(request.task)
        info = self.info()
        return hardware_pb2.GetRecommendationsResponse(
            task=request.task,
            profile=info.profile,
            recommended_model="HuggingFaceTB/SmolLM2-135M-Instruct",
            possible_models=["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"],
            defaults=hardware_pb2.TrainingDefaults(
                per_device_train_batch_size=2,
                gradient_accumulation_steps=4,
                learning_rate=2e-4,
                num_train_epochs=3,
                max_seq_length=1024 if request.task == "text-generation" else 512,
                lora_r=16,
                lora_alpha=32,
                use_4bit=self.with_gpu,
                bf16=self.with_gpu,
                warmup_ratio=0.03,
                lr_scheduler_type="cosine",
                optim="paged_adamw_32bit" if self.with_gpu else "adamw_torch",
            ),
            hardware=info,
        )

    async def EstimateMemory(self, request: Any, context: Any) -> Any:
        self.estimates.append(request)
        if request.model_name == "missing/model":
            raise NotFound("no config.json for missing/model")
        weights = (GIB // 2) if request.use_4bit else 2 * GIB
        activations = request.batch_size * request.max_seq_length * 1024
        breakdown = hardware_pb2.MemoryBreakdown(
            weights_bytes=weights,
            adapters_bytes=request.lora_r * 1024 * 1024,
            optimizer_bytes=2 * request.lora_r * 1024 * 1024,
            gradients_bytes=request.lora_r * 1024 * 1024,
            activations_bytes=activations,
            overhead_bytes=GIB // 2,
        )
        breakdown.total_bytes = sum(
            getattr(breakdown, f)
            for f in (
                "weights_bytes",
                "adapters_bytes",
                "optimizer_bytes",
                "gradients_bytes",
                "activations_bytes",
                "overhead_bytes",
            )
        )
        available = 12 * GIB
        fits = breakdown.total_bytes <= available
        # The settings estimated, as hardware-svc echoes them ("" distributed is ddp there).
        settings = hardware_pb2.MemorySettings(
            per_device_train_batch_size=request.batch_size,
            gradient_accumulation_steps=request.gradient_accumulation_steps or 1,
            max_seq_length=request.max_seq_length,
            use_4bit=request.use_4bit,
            gradient_checkpointing=request.gradient_checkpointing,
            provider=request.provider or "huggingface",
            distributed=request.distributed or "ddp",
        )
        proposals = []
        if not fits and request.world_size > 1 and settings.distributed == "ddp":
            # A job of several processes that does not fit under ddp: shard it, as hardware-svc proposes.
            sharded = hardware_pb2.MemorySettings()
            sharded.CopyFrom(settings)
            sharded.distributed = "fsdp"
            proposals.append(hardware_pb2.MemoryProposal(
                settings=sharded, total_bytes=available - GIB, changed=["distributed"],
                description=f"distributed fsdp across the {request.world_size} processes",
            ))
        return hardware_pb2.EstimateMemoryResponse(
            breakdown=breakdown,
            fits=fits,
            available_bytes=available,
            device="cpu",
            message="fits in available RAM" if fits else "does not fit in available RAM",
            settings=settings,
            proposals=proposals,
        )

    async def DescribeModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.describe_timeouts.append(context.time_remaining())
        name = request.model_name
        if name.startswith("gated/"):
            raise PermissionDenied(f"{name} is gated")
        if name.startswith("offline/"):
            raise Unavailable("Hugging Face Hub cannot be reached")
        if name.startswith("missing/"):
            raise NotFound(f"{name} does not exist")
        if name.startswith("/"):
            message = "is not a model folder inside the allowed model roots"
            raise InvalidArgument(f"model_name {message}", [FieldViolation("model_name", message)])
        return hardware_pb2.DescribeModelResponse(id=name, author=name.split("/")[0], downloads=1234, likes=56)


class FakeInference(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: list[Any] = []
        self.unloaded: list[str] = []
        self.unload_fails = False
        self.fail_stream_after: int | None = None
        self.merges: list[inference_pb2.MergeAdapterRequest] = []
        self.merge_fails_with: grpc.StatusCode | None = None
        self.pushes: list[inference_pb2.PushToHubRequest] = []
        # Set by FakeServices: a merge writes its folder where the registry fake sees it.
        self.registry: FakeRegistry | None = None

    def _check(self, model: inference_pb2.ModelRef) -> None:
        if any(digest == "tampered" for digest in model.file_sha256.values()):
            raise FailedPrecondition(f"Files of model {model.model_id} changed since registration")

    def _text(self, params: inference_pb2.GenerationParams) -> str:
        words = f"Echo of {params.prompt or params.question}".split()
        return " ".join(words[: params.max_new_tokens])

    async def Generate(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        self._check(request.model)
        text = self._text(request.params)
        return inference_pb2.GenerateResponse(
            generated_text=text, tokens_generated=len(text.split()), generation_time_ms=12
        )

    async def GenerateStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.requests.append(request)
        self._check(request.model)
        words = self._text(request.params).split()
        for index, word in enumerate(words, start=1):
            if self.fail_stream_after is not None and index > self.fail_stream_after:
                raise Unavailable("inference backend went away")
            yield inference_pb2.GenerateStreamResponse(
                text=word if index == 1 else f" {word}",
                finished=index == len(words),
                tokens_generated=index,
                generation_time_ms=index,
            )

    async def GenerateStreams(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        # As inference-svc serves it: each stream is this fake's GenerateStream for its request.
        async for message in StreamsSession(lambda request: self.GenerateStream(request, context)).responses(
            request_iterator
        ):
            yield message

    async def MergeAdapter(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.merges.append(request)
        if self.registry is not None:
            self.registry.folders.add(request.output_path)  # written, whether or not it completes
        if self.merge_fails_with is not None:
            await context.abort(self.merge_fails_with, "fake merge failure")
        return inference_pb2.MergeAdapterResponse(
            path=request.output_path, file_sha256={"model.safetensors": "cd" * 32}, size_bytes=3 * 1024 * 1024
        )

    async def PushToHub(self, request: Any, context: Any) -> Any:
        self.pushes.append(request)
        raise Unavailable("The Hugging Face Hub cannot be reached from this server")

    async def UnloadModel(self, request: Any, context: Any) -> Any:
        if self.unload_fails:
            raise Unavailable("inference is down")
        self.unloaded.append(request.model_id)
        return inference_pb2.UnloadModelResponse(unloaded=True)


@dataclass
class FakeServices:
    """The four fakes on one background event loop; addresses for GatewaySettings."""

    trainer: FakeTrainer = field(default_factory=FakeTrainer)
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    hardware: FakeHardware = field(default_factory=FakeHardware)
    inference: FakeInference = field(default_factory=FakeInference)
    addresses: dict[str, str] = field(default_factory=dict)
    _servers: list[grpc.aio.Server] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _thread: threading.Thread | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> None:
        self.inference.registry = self.registry
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-services", daemon=True)
        self._thread.start()
        registrations = {
            "trainer": (trainer_pb2_grpc.add_TrainerServiceServicer_to_server, self.trainer, trainer_pb2),
            "registry": (registry_pb2_grpc.add_RegistryServiceServicer_to_server, self.registry, registry_pb2),
            "hardware": (hardware_pb2_grpc.add_HardwareServiceServicer_to_server, self.hardware, hardware_pb2),
            "inference": (inference_pb2_grpc.add_InferenceServiceServicer_to_server, self.inference, inference_pb2),
        }
        for name, (add, servicer, module) in registrations.items():
            full_name = service_name(module, f"{name.capitalize()}Service")
            self.addresses[name] = self._run(self._serve(add, servicer, full_name))

    async def _serve(self, add: Any, servicer: Any, full_name: str) -> str:
        server, port, health = build_server([(add, servicer, full_name)], "127.0.0.1:0")
        await server.start()
        await mark_serving(health, [full_name])
        self._servers.append(server)
        return f"127.0.0.1:{port}"

    def reset(self) -> None:
        for fake in (self.trainer, self.registry, self.hardware, self.inference):
            fake.reset()

    def gate(self) -> asyncio.Event:
        """An event on the fakes' loop (for status_gate / list_models_gate); open it with release()."""
        return self._run(_new_event())

    def release(self, gate: asyncio.Event) -> None:
        self._loop.call_soon_threadsafe(gate.set)

    def stop(self) -> None:
        for server in self._servers:
            self._run(server.stop(None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


def settings_for(fakes: FakeServices, **overrides: Any) -> GatewaySettings:
    """Gateway settings pointing at the fakes; NATS at a port where nothing listens unless given."""
    values: dict[str, Any] = {
        "trainer_addr": fakes.addresses["trainer"],
        "registry_addr": fakes.addresses["registry"],
        "hardware_addr": fakes.addresses["hardware"],
        "inference_addr": fakes.addresses["inference"],
        "nats_url": f"nats://127.0.0.1:{free_port()}",
        "log_json": False,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@asynccontextmanager
async def running_client(settings: GatewaySettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running, and an httpx client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield app, http
