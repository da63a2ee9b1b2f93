"""Runs each job in its own worker process and turns what happens to it into job events.

The worker (`python -m modelforge_training <job.json> --events-fd N`) writes JSON lines to a
dedicated pipe; this side assigns the sequence numbers, updates the job and hands every event to the
publisher. It watches the process: a crash, an OOM kill or a `kill -9` ends that job in ERROR and
leaves the service running. A finished model is registered with registry-svc here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from modelforge_common.errors import ModelForgeError, Unavailable
from modelforge_trainer.background import start_detached
from modelforge_trainer.jobs import Job, JobStatus
from modelforge_trainer.lineage import LossCurve, build_lineage
from modelforge_trainer.metrics import StepTimer, job_finished
from modelforge_trainer.orphans import WorkerPidFile, process_start_time
from modelforge_trainer.ports import ModelRecord, ModelRegistrar
from modelforge_trainer.publisher import EventSink
from modelforge_training.lifeline import DATA_DIR_ENV, PARENT_ENV, STOP_GRACE_ENV, parent_marker
from modelforge_training.protocol import (
    ErrorMessage,
    LogMessage,
    MetricMessage,
    Progress,
    WorkerResult,
    decode,
)
from modelforge_training.spec import TrainingConfig, TrainingJobSpec, apply_recorded, recorded_config, write_spec

log = logging.getLogger(__name__)

WORKER_MODULE = "modelforge_training"
OUTPUT_TAIL_LINES = 40
# Registration retries: 1, 2, 4 ... seconds apart, at most 30, for registration_retry_s in all.
REGISTRATION_FIRST_RETRY_S = 1.0
REGISTRATION_MAX_RETRY_S = 30.0
GIB = 1024**3


@dataclass(frozen=True)
class JobPaths:
    """Where a job's files live under the data dir."""

    data_dir: Path

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    def model_dir(self, job_id: str) -> Path:
        return self.data_dir / "models" / job_id

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.data_dir / "checkpoints" / job_id

    def pid_file(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "worker.pid"

    def registration_file(self, job_id: str) -> Path:
        """The finished job's model record, kept until the registry took it."""
        return self.job_dir(job_id) / "registration.json"

    def worker_file(self, job_id: str) -> Path:
        """The worker's and its trainer's pids and start times (orphans.WorkerPidFile)."""
        return self.job_dir(job_id) / "worker.json"

    def log_file(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "worker.log"


def oom_kill_count() -> int | None:
    """The kernel's OOM-kill counter of this cgroup (v2 memory.events or v1 memory.oom_control)."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def describe_signal_exit(signum: int, *, oom_killed: bool, peak_rss_bytes: int, total_ram_bytes: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "unknown signal"
    text = f"training process was killed by signal {signum} ({name})"
    advice = "Lower the batch size or max_seq_length, or use 4-bit quantization (qlora)"
    if oom_killed:
        peak = f"{peak_rss_bytes / GIB:.1f} GiB"
        return f"{text}: out of memory, the kernel's OOM killer ended it (peak {peak}). {advice}"
    if signum == signal.SIGKILL and total_ram_bytes and peak_rss_bytes >= 0.85 * total_ram_bytes:
        return (
            f"{text}: likely out of memory (it used {peak_rss_bytes / GIB:.1f} GiB of "
            f"{total_ram_bytes / GIB:.1f} GiB RAM). {advice}"
        )
    if signum == signal.SIGKILL:
        return f"{text} from outside trainer-svc (an operator or the system's out-of-memory killer)"
    return text


# What a worker inherits of the trainer's environment: the system, Python, the numeric and ML
# libraries' own settings. Nothing else: no API keys, no database URL, no MODELFORGE_* setting.
WORKER_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "LD_LIBRARY_PATH", "LD_PRELOAD", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS",
    "PYTHONDONTWRITEBYTECODE", "XDG_CACHE_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "no_proxy",
    # Experiment tracking (modelforge_training/tracking.py).
    "MODELFORGE_MLFLOW_URI", "MODELFORGE_MLFLOW_EXPERIMENT",
})
WORKER_ENV_PREFIXES = (
    "LC_", "CUDA_", "NVIDIA_", "NCCL_", "PYTORCH_", "TORCH_", "TORCHINDUCTOR_", "TRITON_", "HF_",
    "TRANSFORMERS_", "UNSLOTH_", "BNB_", "ACCELERATE_", "OTEL_",
)
# The Hub token, under the names huggingface_hub reads; passed only to a job that uses the Hub.
HUB_TOKEN_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
TRAINER_HUB_TOKEN = "MODELFORGE_HF_TOKEN"


def worker_environment(source: Mapping[str, str], *, needs_hub: bool) -> dict[str, str]:
    """The environment of a training worker, from the trainer's: only what training needs (see
    WORKER_ENV_NAMES); the Hub token only when the job downloads its model from the Hub."""
    env = {
        name: value
        for name, value in source.items()
        if (name in WORKER_ENV_NAMES or name.startswith(WORKER_ENV_PREFIXES)) and name not in HUB_TOKEN_NAMES
    }
    if needs_hub:
        token = next((source[name] for name in (*HUB_TOKEN_NAMES, TRAINER_HUB_TOKEN) if source.get(name)), "")
        if token:
            env["HF_TOKEN"] = token
    else:
        env["HF_HUB_OFFLINE"] = "1"  # a local folder needs nothing from the Hub
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    return env


def write_registration(record: ModelRecord, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
    os.replace(tmp, path)


def read_registration(path: Path) -> ModelRecord | None:
    try:
        return ModelRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def training_params(config: TrainingConfig) -> dict[str, float]:
    """The rest-api.md summary of a model's training."""
    return {
        "num_epochs": float(config.num_train_epochs),
        "batch_size": float(config.per_device_train_batch_size),
        "learning_rate": float(config.learning_rate),
    }


def default_model_name(config: TrainingConfig, job_id: str) -> str:
    base = Path(config.model_name.rstrip("/")).name or "model"
    return f"{base}-{config.task}-{job_id.rsplit('_', 1)[-1]}"


@dataclass
class _Watch:
    """What the service saw of one worker process."""

    error: str = ""
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_TAIL_LINES))
    peak_rss_bytes: int = 0
    loss_curve: LossCurve = field(default_factory=LossCurve)
    step_timer: StepTimer = field(default_factory=StepTimer)


class JobRunner:
    def __init__(
        self,
        sink: EventSink,
        registrar: ModelRegistrar,
        paths: JobPaths,
        *,
        stop_grace_s: float = 20.0,
        worker_command: Sequence[str] = (sys.executable, "-m", WORKER_MODULE),
        env: Mapping[str, str] | None = None,
        registration_retry_s: float = 900.0,
    ) -> None:
        self.sink = sink
        self.registrar = registrar
        self.paths = paths
        self.stop_grace_s = stop_grace_s
        # Long enough to outlast a registry restart (or a rolling update of its pods).
        self.registration_retry_s = registration_retry_s
        self.worker_command = tuple(worker_command)
        self.env = dict(env if env is not None else os.environ)
        self._start_time = process_start_time(os.getpid())
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # CUDA memory each running worker last reported holding (GPU nodes only).
        self.gpu_memory: dict[str, int] = {}
        # Called after a job's worker is gone and the job ended (the service starts the next queued job).
        self.on_finished: Callable[[Job], None] | None = None

    def worker_pid(self, job_id: str) -> int | None:
        process = self._processes.get(job_id)
        return process.pid if process is not None and process.returncode is None else None

    def launch(
        self, job: Job, resume_checkpoint: str = "", message: str = "Training started", request_id: str | None = None
    ) -> None:
        """Marks the job running (its first event) and starts supervising its worker in the background
        (its calls carry request_id, else the request id of the call launching it)."""
        self.sink.publish(job.mark_running(message))
        self._tasks[job.job_id] = start_detached(
            self._run(job, resume_checkpoint), name=f"job-{job.job_id}", request_id=request_id
        )

    async def wait(self, job_id: str, timeout_s: float | None = None) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout_s)

    async def stop(self, job: Job, wait_s: float, reason: str = "by user") -> None:
        """Asks the worker to stop at its next step (it saves a checkpoint); kills it after stop_grace_s."""
        if job.active and job.stop_reason is None:
            self.sink.publish(job.mark_stopping(reason))
        self._signal_stop(job.job_id)
        await self.wait(job.job_id, wait_s)

    def _signal_stop(self, job_id: str) -> None:
        process = self._processes.get(job_id)
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        asyncio.get_running_loop().call_later(self.stop_grace_s, self._kill, job_id)

    def _kill(self, job_id: str) -> None:
        process = self._processes.get(job_id)
        if process is not None and process.returncode is None:
            log.warning("worker did not stop within %.0fs; killing it", self.stop_grace_s, extra={"job_id": job_id})
            # The ranks of a distributed job run in sessions of their own (torch starts them so):
            # the worker's process group alone would miss them.
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    async def shutdown(self, jobs: list[Job], grace_s: float) -> None:
        """Stops every running worker (they save checkpoints) and waits for them."""
        for job in jobs:
            # A job registering its model has no worker to stop: a replica that takes it over
            # after this one is gone finishes the registration.
            if job.active and job.stop_reason is None and job.status is not JobStatus.REGISTERING:
                self.sink.publish(job.mark_stopping("because trainer-svc shut down"))
            self._signal_stop(job.job_id)
        if self._tasks:
            await asyncio.wait(set(self._tasks.values()), timeout=grace_s)
        for job_id in list(self._processes):
            self._kill(job_id)

    async def _run(self, job: Job, resume_checkpoint: str) -> None:
        try:
            await self._supervise(job, resume_checkpoint)
        except Exception as exc:
            log.exception("supervising the worker failed", extra={"job_id": job.job_id})
            if job.active:
                self.sink.publish(job.fail(f"trainer-svc lost track of the training process: {exc}"))
        finally:
            self._processes.pop(job.job_id, None)
            self._tasks.pop(job.job_id, None)
            self.gpu_memory.pop(job.job_id, None)
            if not job.active:
                job_finished(job.status)
            if self.on_finished is not None:
                self.on_finished(job)

    def _worker_env(self, spec: TrainingJobSpec) -> dict[str, str]:
        env = worker_environment(self.env, needs_hub=not spec.local_model)
        # How the worker knows its trainer (modelforge_training/lifeline.py) and a later trainer knows the worker.
        env[PARENT_ENV] = parent_marker(os.getpid(), self._start_time)
        env[DATA_DIR_ENV] = str(self.paths.data_dir)
        env[STOP_GRACE_ENV] = str(self.stop_grace_s + 5)
        return env

    def _write_worker_job(self, job: Job, resume_checkpoint: str, event_sink: str = "pipe") -> tuple[Path, Path]:
        """Fills the job's folders into its spec and writes it as the job's job.json; returns it and
        where the runtime writes its result."""
        job_dir = self.paths.job_dir(job.job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        job_file = job_dir / "job.json"
        result_path = job_dir / "result.json"
        spec = job.spec
        spec.job_id = job.job_id
        spec.output_dir = str(self.paths.model_dir(job.job_id))
        spec.checkpoint_dir = str(self.paths.checkpoint_dir(job.job_id))
        spec.result_path = str(result_path)
        spec.resume_checkpoint = resume_checkpoint
        spec.event_sink = event_sink
        write_spec(spec, job_file)
        return job_file, result_path

    async def _supervise(self, job: Job, resume_checkpoint: str) -> None:
        job_file, result_path = self._write_worker_job(job, resume_checkpoint)
        job_dir = job_file.parent

        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.worker_command,
                str(job_file),
                "--events-fd",
                str(write_fd),
                pass_fds=(write_fd,),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole, spared terminal signals
                env=self._worker_env(job.spec),
                cwd=str(job_dir),
            )
        except OSError as exc:
            os.close(read_fd)
            self.sink.publish(job.fail(f"could not start the training process: {exc}"))
            return
        finally:
            os.close(write_fd)

        self._processes[job.job_id] = process
        job.worker_pid = process.pid
        try:
            worker_started = process_start_time(process.pid)
        except Exception:  # noqa: BLE001 - exited already: nothing to find later
            worker_started = 0.0
        self.paths.pid_file(job.job_id).write_text(f"{process.pid}\n")
        WorkerPidFile(process.pid, worker_started, os.getpid(), self._start_time).write(
            self.paths.worker_file(job.job_id)
        )
        log.info("worker process %d started", process.pid, extra={"job_id": job.job_id})
        if job.stop_reason is not None:
            self._signal_stop(job.job_id)

        watch = _Watch()
        oom_before = oom_kill_count()
        readers = [
            asyncio.create_task(self._read_events(job, read_fd, watch)),
            asyncio.create_task(self._read_output(job, process, watch)),
        ]
        memory = asyncio.create_task(self._watch_memory(process.pid, watch))
        returncode = await process.wait()
        # The pipes close when the worker exits; a grandchild holding them must not stall us.
        _, pending = await asyncio.wait(readers, timeout=10)
        for task in (*pending, memory):
            task.cancel()
        await asyncio.gather(*pending, memory, return_exceptions=True)
        log.info("worker process %d exited with %d", process.pid, returncode, extra={"job_id": job.job_id})

        oom_after = oom_kill_count()
        oom_killed = oom_before is not None and oom_after is not None and oom_after > oom_before
        await self._finish(job, returncode, WorkerResult.read(result_path), watch, oom_killed)

    async def _read_events(self, job: Job, read_fd: int, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=4 * 1024 * 1024)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                self._handle_line(job, line, watch)
        finally:
            transport.close()

    def _handle_line(self, job: Job, line: bytes, watch: _Watch) -> None:
        """One line of the worker protocol (from the events pipe, or NATS for a Kubeflow job's pods)."""
        message = decode(line)
        if message is None:
            log.warning("ignoring a malformed worker message: %r", line[:200], extra={"job_id": job.job_id})
        elif not job.active:
            return
        elif isinstance(message, Progress):
            watch.loss_curve.add(message)
            watch.step_timer.report(message)
            if message.gpu_memory_bytes is not None:
                self.gpu_memory[job.job_id] = message.gpu_memory_bytes
            self.sink.publish(job.update_progress(message))
        elif isinstance(message, MetricMessage):
            self.sink.publish(job.record_metrics(message.metrics, message.message or "Evaluation finished"))
        elif isinstance(message, LogMessage):
            self.sink.publish(job.log(message.message))
        elif isinstance(message, ErrorMessage):
            watch.error = message.message

    async def _read_output(self, job: Job, process: asyncio.subprocess.Process, watch: _Watch) -> None:
        assert process.stdout is not None
        with self.paths.log_file(job.job_id).open("ab") as log_file:
            while raw := await process.stdout.readline():
                log_file.write(raw)
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    watch.output_tail.append(line)
                    log.debug("worker: %s", line, extra={"job_id": job.job_id})

    async def _watch_memory(self, pid: int, watch: _Watch) -> None:
        try:
            root = psutil.Process(pid)
            while True:
                rss = root.memory_info().rss
                for child in root.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
                watch.peak_rss_bytes = max(watch.peak_rss_bytes, rss)
                await asyncio.sleep(1.0)
        except psutil.Error:
            return

    async def _finish(
        self, job: Job, returncode: int, result: WorkerResult | None, watch: _Watch, oom_killed: bool
    ) -> None:
        if not job.active:
            return
        if result is not None and result.outcome == "completed" and returncode == 0:
            await self._complete(job, result, watch.loss_curve)
        elif (result is not None and result.outcome == "stopped" and returncode == 0) or job.stop_reason is not None:
            # (A rank of a distributed job stopped by the launcher because another rank died leaves
            # a "stopped" result behind a failed exit: that job failed.)
            step = result.step if result is not None and result.step else job.current_step
            message = f"Training stopped {job.stop_reason or 'by request'} at step {step}/{job.total_steps}"
            if result is not None and result.checkpoint:
                message += f"; checkpoint saved to {result.checkpoint}"
            self.sink.publish(job.mark_stopped(message))
        elif returncode < 0:
            self.sink.publish(
                job.fail(
                    describe_signal_exit(
                        -returncode,
                        oom_killed=oom_killed,
                        peak_rss_bytes=watch.peak_rss_bytes,
                        total_ram_bytes=psutil.virtual_memory().total,
                    )
                )
            )
        elif watch.error:
            self.sink.publish(job.fail(watch.error))
        else:
            last = watch.output_tail[-1] if watch.output_tail else ""
            self.sink.publish(job.fail(f"training process exited with code {returncode}{': ' + last if last else ''}"))

    async def _complete(self, job: Job, result: WorkerResult, loss_curve: LossCurve) -> None:
        used = {**recorded_config(job.spec), **result.config}
        apply_recorded(job.spec, used)  # what the runtime adjusted (bf16 on a CPU) is what the job ran with
        config = job.spec.config
        metrics = {k: float(v) for k, v in result.metrics.items() if math.isfinite(v)}
        # Off the event loop: it hashes the dataset file.
        lineage = await asyncio.to_thread(
            build_lineage,
            job_id=job.job_id, spec=job.spec, used=used, metrics=metrics, loss_curve=loss_curve,
            queued_at=job.created_at, started_at=job.started_at, finished_at=job.clock(),
            owner=job.owner,
        )
        record = ModelRecord(
            name=config.name or default_model_name(config, job.job_id),
            base_model=config.model_name,
            task=config.task,
            strategy=config.strategy,
            provider=config.provider,
            path=result.output_dir,  # absolute, as the worker wrote it
            config=used,
            training_params=training_params(config),
            metrics=metrics,
            job_id=job.job_id,
            adapter_type="lora",
            lineage=lineage,
        )
        # Kept beside the job until the model is registered: a replica that takes the job over while
        # it is registering (this one died) registers the same record.
        await asyncio.to_thread(write_registration, record, self.paths.registration_file(job.job_id))
        await self.register(job, record)

    async def register(self, job: Job, record: ModelRecord) -> None:
        """Registers the finished job's model; while registry-svc is unreachable the job is
        `registering` and the call is retried with exponential backoff for registration_retry_s."""
        deadline = time.monotonic() + self.registration_retry_s
        delay = REGISTRATION_FIRST_RETRY_S
        while True:
            try:
                model_id = await self.registrar.register_model(record)
                break
            except Unavailable as exc:
                if time.monotonic() + delay > deadline:
                    self.sink.publish(job.fail(
                        f"Model registration failed: {exc.message} (retried for {self.registration_retry_s:.0f}s)"
                    ))
                    return
                if job.status is not JobStatus.REGISTERING:
                    self.sink.publish(job.mark_registering(
                        f"Training finished; registering the model, retried until the registry answers ({exc.message})"
                    ))
                log.warning("registering the model failed, retrying in %.0fs: %s", delay, exc.message,
                            extra={"job_id": job.job_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, REGISTRATION_MAX_RETRY_S)
            except ModelForgeError as exc:
                self.sink.publish(job.fail(f"Model registration failed: {exc.message}"))
                return
            except Exception as exc:
                log.exception("model registration failed", extra={"job_id": job.job_id})
                self.sink.publish(job.fail(f"Model registration failed: {type(exc).__name__}"))
                return
        # The adapter is saved; the job's resumable checkpoints only cost disk now.
        shutil.rmtree(self.paths.checkpoint_dir(job.job_id), ignore_errors=True)
        self.paths.registration_file(job.job_id).unlink(missing_ok=True)
        self.sink.publish(job.complete(model_id, record.metrics))

    def resume_registration(self, job: Job) -> bool:
        """Takes over the registration of a job whose replica died while it was registering; False
        when that replica left no registration record (the job must be trained again)."""
        record = read_registration(self.paths.registration_file(job.job_id))
        if record is None:
            return False
        self._tasks[job.job_id] = start_detached(self._run_registration(job, record), name=f"job-{job.job_id}")
        return True

    async def _run_registration(self, job: Job, record: ModelRecord) -> None:
        try:
            await self.register(job, record)
        finally:
            self._tasks.pop(job.job_id, None)
            if not job.active:
                job_finished(job.status)
            if self.on_finished is not None:
                self.on_finished(job)
