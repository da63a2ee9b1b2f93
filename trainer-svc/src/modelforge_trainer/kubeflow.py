"""The kubeflow backend (MODELFORGE_TRAINER_BACKEND=kubeflow): each job runs as a Kubeflow Trainer
TrainJob (trainer.kubeflow.org/v1alpha1) instead of a local worker process.

The TrainJob references the ClusterTrainingRuntime `modelforge-torch` that deploy/k8s/components/kubeflow
ships (the trainer image, torch policy, the shared artifacts volume at the trainer's data dir), and sets
the nodes, processes per node and GPUs per node. Its pods run torchrun with the same worker module as a
local job, on the job.json this trainer writes to the shared volume; rank 0 writes the adapter and the
result file there, and publishes the worker protocol's lines (modelforge_training/protocol.py) to the NATS subject
modelforge.worker.<job_id> (nats_events.py) instead of a pipe. This trainer follows those lines
exactly as it reads a local worker's pipe (job events, sequence numbers, lineage) and follows the
TrainJob's conditions: Suspended (Kueue holds it) -> the job is queued; Complete -> the model is
registered; Failed -> error with Kubeflow's reason. Stopping deletes the TrainJob: its pods get SIGTERM,
torchrun passes it on, the ranks save a checkpoint.

The Kubernetes API is reached over plain HTTPS with the pod's service account (token and CA mounted
at the standard paths); deploy/k8s/components/kubeflow grants the trainer's account TrainJobs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from modelforge_common.errors import ModelForgeError, Unavailable
from modelforge_trainer.jobs import Job, JobStatus
from modelforge_trainer.nats_events import NATS_URL_ENV as WORKER_NATS_URL_ENV
from modelforge_trainer.nats_events import SUBJECT_ENV as WORKER_EVENTS_SUBJECT_ENV
from modelforge_trainer.runner import JobRunner, _Watch
from modelforge_training.protocol import WorkerResult
from modelforge_training.spec import TrainingConfig, world_size

log = logging.getLogger(__name__)

API_GROUP = "trainer.kubeflow.org"
API_VERSION = f"{API_GROUP}/v1alpha1"
RUNTIME_NAME = "modelforge-torch"
WORKER_EVENTS_PREFIX = "modelforge.worker"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_ID_LABEL = "modelforge.io/job-id"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WORKER_MODULE = "modelforge_training"


def worker_events_subject(job_id: str) -> str:
    return f"{WORKER_EVENTS_PREFIX}.{job_id}"


def train_job_name(job_id: str) -> str:
    """An RFC 1035 label (what TrainJob names must be) from a job id: train_20240315_143022_ab12 ->
    mf-train-20240315-143022-ab12."""
    name = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")
    return f"mf-{name}"[:63].rstrip("-")


@dataclass(frozen=True)
class KubeflowOptions:
    namespace: str
    runtime: str = RUNTIME_NAME
    # The NATS URL as the pods reach it (the trainer's own, in the same namespace).
    nats_url: str = "nats://nats:4222"
    # Kueue LocalQueue to submit to; "" submits without the label (no Kueue, or its default queue).
    queue_name: str = ""
    # GPUs per training process (one per process on GPU nodes; 0 trains on the nodes' CPUs).
    gpus_per_process: int = 1
    poll_s: float = 5.0


def build_train_job(job_id: str, config: TrainingConfig, job_file: str, options: KubeflowOptions) -> dict[str, Any]:
    """The TrainJob of one job: the runtime's image and volumes, our command, the job's shape."""
    labels = {"app.kubernetes.io/part-of": "modelforge", JOB_ID_LABEL: train_job_name(job_id)[3:]}
    if options.queue_name:
        labels[QUEUE_LABEL] = options.queue_name
    gpus = options.gpus_per_process * config.processes_per_node
    trainer: dict[str, Any] = {
        "numNodes": config.num_nodes,
        "numProcPerNode": config.processes_per_node,
        # torchrun takes the nodes, ranks and rendezvous from the PET_* variables the torch policy sets.
        "command": ["torchrun", "-m", WORKER_MODULE, job_file],
        "env": [
            {"name": WORKER_NATS_URL_ENV, "value": options.nats_url},
            {"name": WORKER_EVENTS_SUBJECT_ENV, "value": worker_events_subject(job_id)},
        ],
    }
    if gpus:
        trainer["resourcesPerNode"] = {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": {"name": train_job_name(job_id), "namespace": options.namespace, "labels": labels},
        "spec": {
            "runtimeRef": {"apiGroup": API_GROUP, "kind": "ClusterTrainingRuntime", "name": options.runtime},
            "trainer": trainer,
        },
    }


class Phase(enum.Enum):
    PENDING = "pending"  # created, pods not running yet
    QUEUED = "queued"  # suspended (Kueue has not admitted it)
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


def train_job_phase(train_job: Mapping[str, Any]) -> tuple[Phase, str]:
    """Where a TrainJob stands, from its conditions (Kubeflow Trainer's Suspended, Complete, Failed)
    and the jobs' status; the message says why (Kueue's or Kubeflow's own words)."""
    conditions = {
        str(c.get("type")): c for c in (train_job.get("status") or {}).get("conditions") or [] if isinstance(c, dict)
    }

    def true(kind: str) -> dict[str, Any] | None:
        condition = conditions.get(kind)
        return condition if condition is not None and condition.get("status") == "True" else None

    if (failed := true("Failed")) is not None:
        return Phase.FAILED, str(failed.get("message") or failed.get("reason") or "the TrainJob failed")
    if (complete := true("Complete")) is not None:
        return Phase.COMPLETE, str(complete.get("message") or "")
    suspended = true("Suspended")
    if suspended is not None or (train_job.get("spec") or {}).get("suspend") is True:
        why = (suspended or {}).get("message") or "suspended"
        return Phase.QUEUED, str(why)
    jobs = (train_job.get("status") or {}).get("jobsStatus") or []
    if any(int(j.get("active") or 0) > 0 or int(j.get("ready") or 0) > 0 for j in jobs if isinstance(j, dict)):
        return Phase.RUNNING, ""
    return Phase.PENDING, ""


@dataclass
class KubernetesApi:
    """The few calls made on TrainJobs, over HTTPS with a bearer token."""

    base_url: str
    token: str = ""
    verify: str | bool = True
    timeout_s: float = 10.0
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)

    @classmethod
    def in_cluster(
        cls, environ: Mapping[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> KubernetesApi:
        """The API server and credentials a pod has (KUBERNETES_SERVICE_HOST/PORT, the mounted token and CA)."""
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise Unavailable("the kubeflow backend runs in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set)")
        try:
            token = (account_dir / "token").read_text().strip()
        except OSError as exc:
            raise Unavailable(f"no service account token at {account_dir}/token: {exc.strerror}") from exc
        ca = account_dir / "ca.crt"
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", token, str(ca) if ca.is_file() else True)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=headers, verify=self.verify, timeout=self.timeout_s
            )
        return self._client

    def _path(self, namespace: str, name: str = "") -> str:
        path = f"/apis/{API_VERSION}/namespaces/{namespace}/trainjobs"
        return f"{path}/{name}" if name else path

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return await self._http().request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"Kubernetes API unreachable ({type(exc).__name__}: {exc})") from exc

    @staticmethod
    def _refusal(response: httpx.Response, what: str) -> ModelForgeError:
        try:
            reason = str(response.json().get("message") or response.text)
        except ValueError:
            reason = response.text
        error = Unavailable if response.status_code >= 500 or response.status_code == 429 else ModelForgeError
        return error(f"{what}: Kubernetes answered {response.status_code}: {reason[:500]}")

    async def create_train_job(self, train_job: dict[str, Any]) -> dict[str, Any]:
        namespace = train_job["metadata"]["namespace"]
        response = await self._call("POST", self._path(namespace), train_job)
        if response.status_code == 409:  # a retry of a create whose answer was lost: the same job
            existing = await self.get_train_job(namespace, train_job["metadata"]["name"])
            if existing is not None:
                return existing
        if response.status_code not in (200, 201):
            raise self._refusal(response, f"creating TrainJob {train_job['metadata']['name']}")
        return dict(response.json())

    async def get_train_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self._call("GET", self._path(namespace, name))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refusal(response, f"reading TrainJob {name}")
        return dict(response.json())

    async def delete_train_job(self, namespace: str, name: str) -> bool:
        """Deletes it and its pods (foreground: the TrainJob stays until they are gone); False when
        there was none."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}
        response = await self._call("DELETE", self._path(namespace, name), body)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 202):
            raise self._refusal(response, f"deleting TrainJob {name}")
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# subscribe(subject, on_message) -> an async callable that ends the subscription.
Subscribe = Callable[[str, Callable[[bytes], None]], Awaitable[Callable[[], Awaitable[None]]]]


class KubeflowJobRunner(JobRunner):
    """JobRunner whose jobs of several processes run as TrainJobs: the same job events, results and
    registration as a local worker's."""

    def __init__(self, *args: Any, api: KubernetesApi, options: KubeflowOptions, subscribe: Subscribe,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.api = api
        self.options = options
        self.subscribe = subscribe
        self._deleting: dict[str, asyncio.Task[None]] = {}

    # A job of one process runs as a local worker, as with the local backend; only jobs of several
    # processes become TrainJobs (their processes are pods: no pid, no local signals).

    def _signal_stop(self, job_id: str) -> None:
        if job_id in self._processes:
            super()._signal_stop(job_id)
        elif job_id in self._tasks and job_id not in self._deleting:
            self._deleting[job_id] = asyncio.get_running_loop().create_task(self._delete(job_id))

    async def _delete(self, job_id: str) -> None:
        try:
            await self.api.delete_train_job(self.options.namespace, train_job_name(job_id))
        except ModelForgeError as exc:
            log.warning("deleting the TrainJob failed: %s", exc.message, extra={"job_id": job_id})
            self._deleting.pop(job_id, None)  # asked again at the next stop

    async def _supervise(self, job: Job, resume_checkpoint: str) -> None:
        if world_size(job.spec.config) <= 1:
            await super()._supervise(job, resume_checkpoint)
            return
        # The pods' rank 0 publishes to NATS: the runtime finds that sink by name (nats_events.py).
        job_file, result_path = self._write_worker_job(job, resume_checkpoint, event_sink="nats")
        result_path.unlink(missing_ok=True)

        watch = _Watch()
        name = train_job_name(job.job_id)
        unsubscribe = await self.subscribe(
            worker_events_subject(job.job_id), lambda data: self._handle_line(job, data, watch)
        )
        try:
            returncode = await self._follow(job, name, str(job_file), watch)
        finally:
            self._deleting.pop(job.job_id, None)
            with contextlib.suppress(Exception):
                await unsubscribe()
        await self._finish(job, returncode, WorkerResult.read(result_path), watch, oom_killed=False)

    async def _follow(self, job: Job, name: str, job_file: str, watch: _Watch) -> int:
        """Submits the TrainJob and follows it to its end: 0 complete (or deleted on a stop), 1 failed."""
        try:
            await self.api.create_train_job(build_train_job(job.job_id, job.spec.config, job_file, self.options))
        except ModelForgeError as exc:
            watch.error = f"could not submit the TrainJob: {exc.message}"
            return 1
        config = job.spec.config
        self.sink.publish(job.log(f"Submitted TrainJob {self.options.namespace}/{name} "
                                  f"({config.num_nodes} node(s) x {config.processes_per_node} process(es))"))
        if job.stop_reason is not None:
            self._signal_stop(job.job_id)
        while True:
            try:
                train_job = await self.api.get_train_job(self.options.namespace, name)
            except Unavailable as exc:
                # The API server restarting is no reason to fail a job that trains on.
                log.warning("reading the TrainJob failed: %s", exc.message, extra={"job_id": job.job_id})
                await asyncio.sleep(self.options.poll_s)
                continue
            except ModelForgeError as exc:
                watch.error = f"lost track of TrainJob {name}: {exc.message}"
                return 1
            if train_job is None:
                if job.stop_reason is None:
                    watch.error = f"TrainJob {name} was deleted outside ModelForge"
                    return 1
                return 0
            phase, message = train_job_phase(train_job)
            if phase is Phase.FAILED:
                watch.error = f"TrainJob {name} failed: {message}"
                return 1
            if phase is Phase.COMPLETE:
                return 0
            if phase is Phase.QUEUED and job.status is JobStatus.RUNNING:
                self.sink.publish(job.mark_waiting(f"Queued: TrainJob {name} waits for the cluster ({message})"))
            elif phase is not Phase.QUEUED and job.status is JobStatus.QUEUED:
                self.sink.publish(job.mark_admitted(f"TrainJob {name} admitted"))
            await asyncio.sleep(self.options.poll_s)


def nats_subscriber(connection: Any) -> Subscribe:
    """subscribe() over a nats-py connection (core NATS: a worker's lines are not kept)."""

    async def subscribe(subject: str, on_message: Callable[[bytes], None]) -> Callable[[], Awaitable[None]]:
        async def handle(message: Any) -> None:
            on_message(message.data)

        subscription = await connection.subscribe(subject, cb=handle)
        unsubscribe: Callable[[], Awaitable[None]] = subscription.unsubscribe  # nats-py is untyped
        return unsubscribe

    return subscribe
