"""Builds trainer-svc from its settings: clients, publisher, runner, service, gRPC server.
__main__ serves it; component tests start the same object on port 0 with fakes for other services."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health

from modelforge.v1 import trainer_pb2, trainer_pb2_grpc
from modelforge_common.grpc_server import build_server, mark_serving, service_name
from modelforge_common.nats import connect
from modelforge_common.settings import port_of
from modelforge_trainer.clients import HardwareClient, RegistryClient
from modelforge_trainer.convert import encode_event
from modelforge_trainer.device import DeviceInfo, detect_device
from modelforge_trainer.jobs import JobRegistry, JobStatus
from modelforge_trainer.metrics import jobs_collector
from modelforge_trainer.orphans import end_left_behind_workers
from modelforge_trainer.ports import DatasetLookup, MemoryEstimator, ModelRegistrar
from modelforge_trainer.publisher import NatsEventPublisher
from modelforge_trainer.queue import JetStreamJobQueue
from modelforge_trainer.recorder import RecordingStoreSink
from modelforge_trainer.runner import JobPaths, JobRunner
from modelforge_trainer.service import DurableJobs, TrainerService
from modelforge_trainer.servicer import TrainerServicer
from modelforge_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

SERVICE_NAME = service_name(trainer_pb2, "TrainerService")
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def kubeflow_runner(
    settings: TrainerSettings,
    sink: Any,
    registrar: Any,
    paths: JobPaths,
    closers: list[Any],
    runner_options: dict[str, Any],
) -> JobRunner:
    """The kubeflow backend's runner (kubeflow.py): in-cluster API credentials, the pods' NATS subjects
    followed over a connection of its own (opened at the first job)."""
    from modelforge_trainer.kubeflow import KubeflowJobRunner, KubeflowOptions, KubernetesApi, nats_subscriber

    api = KubernetesApi.in_cluster()
    closers.append(api.close)
    namespace = settings.kubeflow_namespace
    if not namespace:
        with open(NAMESPACE_FILE, encoding="utf-8") as handle:
            namespace = handle.read().strip()
    options = KubeflowOptions(
        namespace=namespace,
        runtime=settings.kubeflow_runtime,
        nats_url=settings.kubeflow_nats_url or settings.nats_url,
        queue_name=settings.kubeflow_queue,
        gpus_per_process=settings.kubeflow_gpus_per_process,
        poll_s=settings.kubeflow_poll_s,
    )
    connection: Any = None

    async def subscribe(subject: str, on_message: Any) -> Any:
        nonlocal connection
        if connection is None:
            connection = await connect(settings.nats_url, "trainer-svc-kubeflow")
        return await nats_subscriber(connection)(subject, on_message)

    async def close_connection() -> None:
        if connection is not None:
            await connection.close()

    closers.append(close_connection)
    return KubeflowJobRunner(sink, registrar, paths, api=api, options=options, subscribe=subscribe, **runner_options)


@dataclass
class TrainerApp:
    settings: TrainerSettings
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service: TrainerService
    publisher: NatsEventPublisher
    closers: list[Any] = field(default_factory=list)
    queue: JetStreamJobQueue | None = None
    recorder: RecordingStoreSink | None = None

    def start_background(self) -> None:
        """Ends workers a dead trainer of this data dir left behind, then starts event publishing, and
        consuming the job queue when jobs are durable."""
        left_behind = end_left_behind_workers(self.service.paths.data_dir)
        if left_behind:
            log.warning("ended %d worker process(es) left behind by an earlier trainer-svc: %s",
                        len(left_behind), left_behind)
        self.publisher.start()
        if self.queue is not None:
            self.queue.start(
                self.service.take_delivery, self.service.free_slots, self.service.stop_requested, self.service.runs_here
            )

    async def start(self) -> None:
        self.start_background()
        await self.server.start()
        await mark_serving(self.health, [SERVICE_NAME])

    async def cleanup(self) -> None:
        """After the server stopped: stop running jobs (they save checkpoints), flush events, close clients."""
        await self.service.shutdown(self.settings.stop_grace_s + 5)
        if self.queue is not None:
            await self.queue.close()
        if self.recorder is not None:
            await self.recorder.close(timeout_s=5)
        await self.publisher.close(timeout_s=5)
        for close in self.closers:
            await close()

    async def stop(self) -> None:
        await self.server.stop(self.settings.shutdown_grace_s)
        await self.cleanup()


def build_app(
    settings: TrainerSettings,
    *,
    bind: str | None = None,
    device: DeviceInfo | None = None,
    datasets: DatasetLookup | None = None,
    registrar: ModelRegistrar | None = None,
    estimator: MemoryEstimator | None = None,
    worker_command: Sequence[str] | None = None,
) -> TrainerApp:
    """Real clients and the real worker unless given; bind defaults to bind_host and the port of
    trainer_addr. Jobs are durable (registry records, JetStream queue) when settings.durable_jobs is
    on and the registry is the real one."""
    closers = []
    registry: RegistryClient | None = None
    if datasets is None or registrar is None:
        registry = RegistryClient(settings.registry_addr, settings.registry_timeout_s)
        closers.append(registry.close)
    if estimator is None and settings.memory_check:
        hardware = HardwareClient(settings.hardware_addr, settings.hardware_timeout_s)
        closers.append(hardware.close)
        estimator = hardware
    device = device or detect_device()
    paths = JobPaths(settings.resolved_data_dir())
    publisher = NatsEventPublisher(
        # Few reconnect attempts inside nats-py: the publisher reconnects itself, with backoff and
        # rate-limited warnings, so an unreachable NATS does not flood the log.
        lambda: connect(settings.nats_url, "trainer-svc", max_reconnect_attempts=1),
        encode_event,
        buffer_size=settings.event_buffer_size,
    )
    jobs = JobRegistry(settings.slots(device.gpu_count))
    durable: DurableJobs | None = None
    recorder: RecordingStoreSink | None = None
    queue: JetStreamJobQueue | None = None
    if settings.durable_jobs and registrar is None and registry is not None:
        replica = settings.replica()
        recorder = RecordingStoreSink(
            publisher,
            registry,
            jobs.find,
            paths.checkpoint_dir,
            replica=replica,
            progress_interval_s=settings.job_record_interval_s,
        )
        queue = JetStreamJobQueue(
            lambda: connect(settings.nats_url, f"trainer-svc-queue-{replica}"), ack_wait_s=settings.job_ack_wait_s
        )
        durable = DurableJobs(
            store=registry,
            queue=queue,
            recorder=recorder,
            announce=publisher,
            replica=replica,
            max_attempts=settings.job_max_attempts,
            heartbeat_s=max(0.5, settings.job_ack_wait_s / 3),
        )
    runner_options: dict[str, Any] = {
        "stop_grace_s": settings.stop_grace_s,
        "registration_retry_s": settings.registration_retry_s,
        **({"worker_command": worker_command} if worker_command else {}),
    }
    runner: JobRunner
    if settings.trainer_backend == "kubeflow":
        runner = kubeflow_runner(settings, recorder or publisher, registrar or registry, paths, closers, runner_options)
    else:
        runner = JobRunner(
            recorder or publisher,
            registrar or registry,  # type: ignore[arg-type]
            paths,
            **runner_options,
        )
    service = TrainerService(
        jobs=jobs,
        runner=runner,
        datasets=datasets or registry,  # type: ignore[arg-type]
        estimator=estimator,
        defaults=settings.hyperparameters(),
        device=device,
        paths=paths,
        durable=durable,
        backend=settings.trainer_backend,
    )
    def queue_depth() -> int:
        if queue is not None:
            return queue.depth
        return len([job for job in jobs.active() if job.status is JobStatus.QUEUED])

    jobs_collector().watch(jobs.jobs, queue_depth, lambda: sum(runner.gpu_memory.values()) if device.cuda else None)
    servicer = TrainerServicer(service, stop_wait_s=settings.stop_grace_s + 5)
    server, port, health_servicer = build_server(
        [(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, servicer, SERVICE_NAME)],
        bind or f"{settings.bind_host}:{port_of(settings.trainer_addr)}",
        reflection_enabled=settings.grpc_reflection,
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    log.info("device: %s; %d training slot(s)%s", device, jobs.max_concurrent_jobs, "; durable jobs" if durable else "")
    return TrainerApp(settings, server, port, health_servicer, service, publisher, closers, queue, recorder)
