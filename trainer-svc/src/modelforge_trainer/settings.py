"""trainer-svc settings (MODELFORGE_* environment variables, on top of the shared ones)."""

from __future__ import annotations

import os
import socket
from typing import Literal

from modelforge_common.settings import ServiceSettings
from modelforge_trainer.config import HYPERPARAMETER_NAMES, Hyperparameters


class TrainerSettings(ServiceSettings):
    # Jobs this replica trains at once (MODELFORGE_TRAINER_SLOTS); unset: one per GPU, 1 on CPU.
    # A seed start while every slot is busy is refused (409).
    trainer_slots: int | None = None
    # Job state of record in registry-svc and the JetStream work queue (TRAINING_JOBS) shared by
    # every replica; off: jobs live in this replica's memory only.
    durable_jobs: bool = True
    # This replica's name in job records (defaults to the host name and pid).
    replica_name: str = ""
    # Deliveries of a job (replicas that died running it) before it is marked error.
    job_max_attempts: int = 3
    # A job whose replica sent no in-progress ack for this long is redelivered to another replica.
    job_ack_wait_s: float = 60.0
    # Least seconds between two progress writes of a job's record.
    job_record_interval_s: float = 2.0
    # How long a stopping worker may take to reach its next step and save a checkpoint before it is killed.
    stop_grace_s: float = 20.0
    registry_timeout_s: float = 10.0
    # How long a trained model's registration is retried while registry-svc is unreachable (the
    # job shows `registering` meanwhile) before the job fails.
    registration_retry_s: float = 900.0
    hardware_timeout_s: float = 5.0
    # Where jobs run (MODELFORGE_TRAINER_BACKEND): "local", this trainer's worker processes (torchrun
    # for several processes on this node), or "kubeflow", TrainJobs on Kubeflow Trainer (kubeflow.py).
    trainer_backend: Literal["local", "kubeflow"] = "local"
    # The kubeflow backend (kubeflow.py): the TrainJobs' namespace ("" = this pod's own), the
    # ClusterTrainingRuntime they reference, an optional Kueue LocalQueue, GPUs per training process
    # (0: train on the nodes' CPUs), how often a TrainJob's status is read, and the NATS URL as the
    # pods reach it ("" = nats_url).
    kubeflow_namespace: str = ""
    kubeflow_runtime: str = "modelforge-torch"
    kubeflow_queue: str = ""
    kubeflow_gpus_per_process: int = 1
    kubeflow_poll_s: float = 5.0
    kubeflow_nats_url: str = ""
    # Ask hardware-svc whether a job fits in memory before starting it.
    memory_check: bool = True
    # Events kept while NATS is unreachable (the oldest are dropped beyond this).
    event_buffer_size: int = 10_000

    # Defaults for the optional TrainingConfig fields.
    default_num_train_epochs: float = 3.0
    default_per_device_train_batch_size: int = 2
    default_gradient_accumulation_steps: int = 4
    default_learning_rate: float = 2e-4
    default_max_seq_length: int = 2048
    default_lora_r: int = 16
    default_lora_alpha: int = 32
    default_lora_dropout: float = 0.05
    default_warmup_ratio: float = 0.03
    default_lr_scheduler_type: str = "cosine"
    default_optim: str = "adamw_torch"
    default_save_steps: int = 200
    default_logging_steps: int = 1
    default_eval_split: float = 0.1
    default_seed: int = 42
    default_bf16: bool = True

    def slots(self, gpu_count: int) -> int:
        if self.trainer_slots is not None:
            return max(1, self.trainer_slots)
        return max(1, gpu_count)

    def replica(self) -> str:
        return self.replica_name or f"{socket.gethostname()}-{os.getpid()}"

    def hyperparameters(self) -> Hyperparameters:
        """Every Hyperparameters field that has a default_<name> setting takes it (max_steps has none)."""
        names = [name for name in HYPERPARAMETER_NAMES if hasattr(self, f"default_{name}")]
        return Hyperparameters(**{name: getattr(self, f"default_{name}") for name in names})
