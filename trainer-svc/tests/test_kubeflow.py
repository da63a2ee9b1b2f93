"""The kubeflow backend against an in-process fake of the Kubernetes API (an HTTP server that records
every request and keeps TrainJobs the test moves through Kubeflow's conditions): the TrainJobs it
builds validate against Kubeflow Trainer's own CRD schema; create, status mapping (Suspended ->
queued, Failed -> error with the reason, Complete -> registered), stop deletes the TrainJob; the pods'
worker lines reach the job's events as a local worker's do."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelforge.v1.common_pb2 import TrainingConfig
from modelforge_common.errors import ModelForgeError, Unavailable
from modelforge_trainer.config import Hyperparameters, resolve
from modelforge_trainer.jobs import EventKind, Job, JobRegistry, JobStatus
from modelforge_trainer.kubeflow import (
    KubeflowJobRunner,
    KubeflowOptions,
    KubernetesApi,
    Phase,
    build_train_job,
    train_job_name,
    train_job_phase,
    worker_events_subject,
)
from modelforge_trainer.publisher import RecordingSink
from modelforge_trainer.runner import JobPaths
from modelforge_trainer.testing import FakeRegistrar
from modelforge_training.protocol import LogMessage, MetricMessage, Progress, WorkerResult, encode

SCHEMAS = Path(__file__).resolve().parents[2] / "deploy" / "tests" / "schemas" / "kubeflow"
NAMESPACE = "modelforge"
TOKEN = "sa-token-123"
WAIT_S = 30.0
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def train_job_schema() -> dict[str, Any]:
    text = (SCHEMAS / "trainer.kubeflow.org_trainjobs.yaml").read_text()
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


def assert_valid_train_job(train_job: dict[str, Any], schema: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(schema).validate(train_job)
    # The CEL rules a schema validator does not run: the name's format and length, processes >= 1.
    name = train_job["metadata"]["name"]
    assert RFC1035.match(name) and len(name) <= 63, name
    assert train_job["spec"]["trainer"]["numProcPerNode"] >= 1


def config_of(**fields: Any):
    request = TrainingConfig(task="text-generation", model_name="/models/tiny", dataset="d.jsonl", **fields)
    return resolve(
        request, Hyperparameters(), model_name="/models/tiny", local_model=True, dataset_path="/d.jsonl"
    ).config


def test_train_jobs_validate_against_kubeflows_schema(train_job_schema: dict[str, Any]) -> None:
    gpu = build_train_job("train_20240315_143022_ab12", config_of(processes_per_node=8, num_nodes=4,
                          distributed="fsdp"), "/data/jobs/x/job.json",
                          KubeflowOptions(namespace=NAMESPACE, queue_name="team-a"))
    assert_valid_train_job(gpu, train_job_schema)
    assert gpu["metadata"]["name"] == "mf-train-20240315-143022-ab12"
    assert gpu["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert gpu["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                         "name": "modelforge-torch"}
    trainer = gpu["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 8)
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 8}
    # The job file names the NATS event sink (written by the runner, checked in the runner tests below).
    assert trainer["command"] == ["torchrun", "-m", "modelforge_training", "/data/jobs/x/job.json"]
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["MODELFORGE_WORKER_EVENTS_SUBJECT"] == "modelforge.worker.train_20240315_143022_ab12"

    cpu = build_train_job("train_x", config_of(processes_per_node=2), "/j.json",
                          KubeflowOptions(namespace=NAMESPACE, gpus_per_process=0))
    assert_valid_train_job(cpu, train_job_schema)
    assert "resourcesPerNode" not in cpu["spec"]["trainer"]
    assert "kueue.x-k8s.io/queue-name" not in cpu["metadata"]["labels"]
    with pytest.raises(jsonschema.ValidationError):  # the schema check does catch a wrong object
        jsonschema.Draft7Validator(train_job_schema).validate({**cpu, "spec": {"trainer": {"numNodes": 2}}})


def condition(kind: str, status: str = "True", message: str = "", reason: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "message": message, "reason": reason,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


def test_status_mapping() -> None:
    assert train_job_phase({}) == (Phase.PENDING, "")
    suspended = {"status": {"conditions": [condition("Suspended", message="Kueue: quota exhausted")]}}
    assert train_job_phase(suspended) == (Phase.QUEUED, "Kueue: quota exhausted")
    assert train_job_phase({"spec": {"suspend": True}})[0] is Phase.QUEUED
    resumed = {"status": {"conditions": [condition("Suspended", "False")],
                          "jobsStatus": [{"name": "node", "active": 2}]}}
    assert train_job_phase(resumed) == (Phase.RUNNING, "")
    failed = {"status": {"conditions": [condition("Failed", message="node-0 OOMKilled", reason="JobFailed")]}}
    assert train_job_phase(failed) == (Phase.FAILED, "node-0 OOMKilled")
    assert train_job_phase({"status": {"conditions": [condition("Complete")]}})[0] is Phase.COMPLETE


@dataclass
class FakeKubernetes:
    """Kubernetes' TrainJob endpoints in memory: records (method, path, body, authorization) of every
    request; `answer` forces a status code for the next request."""

    train_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any, str]] = field(default_factory=list)
    answer: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, body: Any, authorization: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((method, path, body, authorization))
            if self.answer:
                return self.answer.pop(0), {"kind": "Status", "message": "forced"}
            prefix = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs"
            if not path.startswith(prefix):
                return 404, {"kind": "Status", "message": "no such path"}
            name = path[len(prefix):].strip("/")
            if method == "POST" and not name:
                if body["metadata"]["name"] in self.train_jobs:
                    return 409, {"kind": "Status", "message": "already exists"}
                self.train_jobs[body["metadata"]["name"]] = {**body, "status": {}}
                return 201, body
            if name not in self.train_jobs:
                return 404, {"kind": "Status", "message": "not found"}
            if method == "GET":
                return 200, self.train_jobs[name]
            if method == "DELETE":
                return 200, self.train_jobs.pop(name)
            return 405, {}

    def set_conditions(self, name: str, *conditions: dict[str, Any], active: int = 0) -> None:
        with self.lock:
            self.train_jobs[name]["status"] = {"conditions": list(conditions),
                                               "jobsStatus": [{"name": "node", "active": active}]}


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeKubernetes, str]]:
    fake = FakeKubernetes()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = fake.handle(self.command, self.path, body, self.headers.get("Authorization", ""))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815 - http.server's handler names

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_api_calls_carry_the_token_and_map_answers(fake_api: tuple[FakeKubernetes, str]) -> None:
    fake, url = fake_api
    api = KubernetesApi(url, TOKEN)
    body = build_train_job("train_a", config_of(processes_per_node=2), "/j.json", KubeflowOptions(NAMESPACE))
    try:
        created = await api.create_train_job(body)
        assert created["metadata"]["name"] == "mf-train-a"
        again = await api.create_train_job(body)  # a retried create answers the existing job
        assert again["metadata"]["name"] == "mf-train-a"
        assert (await api.get_train_job(NAMESPACE, "mf-train-a")) is not None
        assert await api.delete_train_job(NAMESPACE, "mf-train-a") is True
        assert await api.get_train_job(NAMESPACE, "mf-train-a") is None
        assert await api.delete_train_job(NAMESPACE, "mf-train-a") is False
        fake.answer.append(503)
        with pytest.raises(Unavailable):
            await api.get_train_job(NAMESPACE, "x")
        fake.answer.append(403)
        with pytest.raises(ModelForgeError, match="403"):
            await api.create_train_job(body)
    finally:
        await api.close()
    assert {auth for *_, auth in fake.requests} == {f"Bearer {TOKEN}"}
    deletes = [b for method, _, b, _ in fake.requests if method == "DELETE"]
    assert deletes[0]["propagationPolicy"] == "Foreground"


def test_in_cluster_credentials(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    api = KubernetesApi.in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"},
                                   tmp_path)
    assert (api.base_url, api.token, api.verify) == ("https://10.0.0.1:6443", "tok", str(tmp_path / "ca.crt"))
    with pytest.raises(Unavailable, match="KUBERNETES_SERVICE_HOST"):
        KubernetesApi.in_cluster({}, tmp_path)


class FakeNats:
    """subscribe() in memory: the test publishes as a pod's rank 0 would."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[bytes], None]] = {}

    async def subscribe(self, subject: str, on_message: Callable[[bytes], None]) -> Any:
        self.handlers[subject] = on_message

        async def unsubscribe() -> None:
            self.handlers.pop(subject, None)

        return unsubscribe

    def publish(self, subject: str, data: bytes) -> None:
        self.handlers[subject](data)


@dataclass
class Harness:
    fake: FakeKubernetes
    nats: FakeNats
    sink: RecordingSink
    registrar: FakeRegistrar
    runner: KubeflowJobRunner
    paths: JobPaths
    registry: JobRegistry = field(default_factory=JobRegistry)

    def new_job(self, **fields: Any) -> Job:
        request = TrainingConfig(task="text-generation", model_name="/models/tiny", dataset="d.jsonl", **fields)
        config = resolve(request, Hyperparameters(), model_name="/models/tiny", local_model=True,
                         dataset_path=str(self.paths.data_dir / "d.jsonl"))
        return self.registry.create(request, config)

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():  # noqa: ASYNC110 - states change in the fake's thread and the runner's task
                await asyncio.sleep(0.02)


@pytest.fixture
async def harness(fake_api: tuple[FakeKubernetes, str], tmp_path: Path) -> Any:
    fake, url = fake_api
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    nats, sink, registrar = FakeNats(), RecordingSink(), FakeRegistrar()
    api = KubernetesApi(url, TOKEN)
    paths = JobPaths(tmp_path)
    runner = KubeflowJobRunner(sink, registrar, paths, api=api, subscribe=nats.subscribe,
                               options=KubeflowOptions(NAMESPACE, queue_name="team-a", poll_s=0.05))
    yield Harness(fake, nats, sink, registrar, runner, paths)
    await api.close()


async def test_a_job_queues_runs_reports_and_registers(harness: Harness) -> None:
    job = harness.new_job(processes_per_node=2, num_nodes=2, distributed="fsdp")
    name = train_job_name(job.job_id)
    harness.runner.launch(job)
    await harness.until(lambda: name in harness.fake.train_jobs)
    created = harness.fake.train_jobs[name]
    assert created["spec"]["trainer"]["numNodes"] == 2
    assert created["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"

    harness.fake.set_conditions(name, condition("Suspended", message="waiting for quota"))
    await harness.until(lambda: job.status is JobStatus.QUEUED)
    assert "waiting for quota" in job.message
    harness.fake.set_conditions(name, condition("Suspended", "False"), active=2)
    await harness.until(lambda: job.status is JobStatus.RUNNING)
    assert job.attempts == 1  # admission after waiting is the same attempt

    subject = worker_events_subject(job.job_id)
    harness.nats.publish(subject, encode(LogMessage("Loading /models/tiny")))
    harness.nats.publish(subject, encode(Progress(step=3, total_steps=6, epoch=0.5, current_epoch=1, total_epochs=1,
                                                  progress=50.0, loss=1.5, learning_rate=1e-4)))
    harness.nats.publish(subject, encode(MetricMessage({"final_loss": 1.2, "eval_loss": 1.3}, "Evaluation finished")))
    await harness.until(lambda: job.current_step == 3)
    assert job.loss == 1.5
    # Rank 0 leaves the adapter and the result on the shared volume, then the TrainJob completes.
    output = harness.paths.model_dir(job.job_id)
    output.mkdir(parents=True)
    WorkerResult(outcome="completed", config={"world_size": 4}, metrics={"final_loss": 1.2, "eval_loss": 1.3},
                 output_dir=str(output), step=6).write(harness.paths.job_dir(job.job_id) / "result.json")
    harness.fake.set_conditions(name, condition("Complete"))
    await harness.runner.wait(job.job_id, WAIT_S)

    assert job.status is JobStatus.COMPLETED, job.error
    [record] = harness.registrar.records
    assert record.job_id == job.job_id and record.lineage["environment"]["world_size"] == 4
    kinds = [e.kind for e in harness.sink.events]
    assert EventKind.LOG in kinds and EventKind.PROGRESS in kinds and EventKind.METRIC in kinds
    job_file = json.loads((harness.paths.job_dir(job.job_id) / "job.json").read_text())
    assert created["spec"]["trainer"]["command"][3] == str(harness.paths.job_dir(job.job_id) / "job.json")
    assert job_file["config"]["distributed"] == "fsdp"
    assert job_file["event_sink"] == "nats"  # rank 0 in the pod publishes through nats_events.py
    assert subject not in harness.nats.handlers  # unsubscribed


async def test_a_failed_train_job_fails_the_job_with_the_reason(harness: Harness) -> None:
    job = harness.new_job(processes_per_node=4)
    name = train_job_name(job.job_id)
    harness.runner.launch(job)
    await harness.until(lambda: name in harness.fake.train_jobs)
    harness.fake.set_conditions(name, condition("Failed", message="Pod node-0-1 OOMKilled", reason="JobFailed"))
    await harness.runner.wait(job.job_id, WAIT_S)
    assert job.status is JobStatus.ERROR
    assert job.error == f"TrainJob {name} failed: Pod node-0-1 OOMKilled"
    assert not harness.registrar.records


async def test_stop_deletes_the_train_job(harness: Harness) -> None:
    job = harness.new_job(processes_per_node=2)
    name = train_job_name(job.job_id)
    harness.runner.launch(job)
    await harness.until(lambda: name in harness.fake.train_jobs)
    harness.fake.set_conditions(name, active=1)
    await harness.runner.stop(job, WAIT_S)
    assert job.status is JobStatus.STOPPED, (job.status, job.error)
    assert ("DELETE", f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs/{name}") in [
        (method, path) for method, path, *_ in harness.fake.requests]
    assert name not in harness.fake.train_jobs


async def test_a_refused_submission_fails_the_job(harness: Harness) -> None:
    harness.fake.answer.append(403)
    job = harness.new_job(processes_per_node=2)
    harness.runner.launch(job)
    await harness.runner.wait(job.job_id, WAIT_S)
    assert job.status is JobStatus.ERROR and "could not submit the TrainJob" in (job.error or "")
    assert "403" in (job.error or "")


async def test_a_pods_rank_zero_publishes_worker_lines_to_nats() -> None:
    import nats

    from modelforge_common.testing import nats_server
    from modelforge_trainer.kubeflow import nats_subscriber
    from modelforge_trainer.nats_events import NatsEventSink
    from modelforge_training.protocol import decode

    received: list[bytes] = []
    with nats_server() as server:
        connection = await nats.connect(server.url)
        try:
            unsubscribe = await nats_subscriber(connection)("modelforge.worker.train_n", received.append)
            await connection.flush()
            # The worker's side is synchronous (its own loop in a thread), as in a pod.
            writer = await asyncio.to_thread(NatsEventSink, server.url, "modelforge.worker.train_n")
            await asyncio.to_thread(writer.log, "hello from rank 0")
            await asyncio.to_thread(writer.metrics, {"final_loss": 0.5, "bad": float("nan")}, "Evaluation finished")
            await asyncio.to_thread(writer.close)
            async with asyncio.timeout(WAIT_S):
                while len(received) < 2:  # noqa: ASYNC110 - filled by the subscription's callback
                    await asyncio.sleep(0.02)
            await unsubscribe()
        finally:
            await connection.close()
    assert [decode(line) for line in received] == [
        LogMessage("hello from rank 0"), MetricMessage({"final_loss": 0.5}, "Evaluation finished")]


def test_a_worker_without_nats_trains_on() -> None:
    from modelforge_trainer.nats_events import NatsEventSink

    # Nothing listens there: the connection is given up after its timeout.
    writer = NatsEventSink("nats://127.0.0.1:1", "modelforge.worker.x", connect_timeout_s=1.0)
    writer.log("dropped")  # no connection: dropped, no error
    writer.close()


def test_the_runtime_finds_the_nats_sink_by_its_entry_point() -> None:
    # A pod's job file names "nats"; the runtime loads it through the group trainer-svc registers.
    from importlib.metadata import entry_points

    from modelforge_trainer.nats_events import NatsEventSink
    from modelforge_training.events import EVENT_SINK_GROUP

    (point,) = entry_points(group=EVENT_SINK_GROUP).select(name="nats")
    assert point.load() == NatsEventSink.from_environment
