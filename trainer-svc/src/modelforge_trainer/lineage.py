"""What a registered model was trained from and with, recorded when its job ends.

The lineage is built as a JSON object in the shape of registry.proto's Lineage message (proto field
names), which convert.model_to_pb parses into the message. Everything here is read in the service
process without importing torch: package versions come from the installed distributions (the
worker runs in the same environment), the device from what the worker reported.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from modelforge_common.dataset_rows import dataset_origin
from modelforge_training.protocol import Progress
from modelforge_training.spec import TrainingJobSpec, world_size

TRAINING_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets")
UNSLOTH_PACKAGES = ("unsloth",)
_CHUNK = 1024 * 1024


@dataclass
class LossCurve:
    """(step, loss, learning_rate, epoch) of every progress report that carried a loss; a step
    reported twice keeps its last value."""

    points: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, progress: Progress) -> None:
        if progress.loss is None:
            return
        point: dict[str, Any] = {"step": progress.step, "loss": progress.loss, "epoch": progress.epoch}
        if progress.learning_rate is not None:
            point["learning_rate"] = progress.learning_rate
        self.points[progress.step] = point

    def as_list(self) -> list[dict[str, Any]]:
        return [self.points[step] for step in sorted(self.points)]


def sha256_of_file(path: Path) -> tuple[str, int]:
    """(sha256 of the bytes, number of non-blank lines): one pass over a JSONL file."""
    digest = hashlib.sha256()
    rows = 0
    with path.open("rb") as handle:
        for line in handle:
            digest.update(line)
            if line.strip():
                rows += 1
    return digest.hexdigest(), rows


def installed_versions(provider: str) -> dict[str, str]:
    names = TRAINING_PACKAGES + (UNSLOTH_PACKAGES if provider == "unsloth" else ())
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = ""  # said plainly rather than left out: it was not installed
    return versions


# Keys of the worker's reported config that locate one run's tracking, not how it trained.
RUN_LOCATIONS = frozenset({"tensorboard_dir", "tracking_url"})


def base_model_lineage(spec: TrainingJobSpec) -> dict[str, Any]:
    """Name, config.json digest and (for a Hub model in the local cache) the commit it came from."""
    config = spec.config
    config_file: Path | None = None
    revision = ""
    if spec.local_model:
        config_file = Path(config.model_name) / "config.json"
    else:
        # The worker loaded the model through the Hub cache: the snapshot folder is named by commit.
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(config.model_name, "config.json")
        if isinstance(cached, str):
            config_file = Path(cached)
            revision = config_file.parent.name
    config_sha256 = ""
    if config_file is not None and config_file.is_file():
        config_sha256 = sha256_of_file(config_file)[0]
    return {
        "name": config.model_name,
        "local": spec.local_model,
        "config_sha256": config_sha256,
        "revision": revision,
    }


def _rfc3339(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def build_lineage(
    *,
    job_id: str,
    spec: TrainingJobSpec,
    used: dict[str, Any],
    metrics: dict[str, float],
    loss_curve: LossCurve,
    queued_at: datetime,
    started_at: datetime | None,
    finished_at: datetime,
    owner: str = "",
    status: str = "completed",
) -> dict[str, Any]:
    """The Lineage message as JSON. `used` is the configuration the worker reported it trained with
    (resolved settings plus device, split sizes); `spec` the job's spec with those applied."""
    config = spec.config
    try:
        dataset_sha256, num_rows = sha256_of_file(Path(spec.dataset_path))
    except OSError:
        # Removed while the job ran: the model is still worth registering, its lineage says so.
        dataset_sha256, num_rows = "", 0
    job: dict[str, Any] = {
        "job_id": job_id,
        "queued_at": _rfc3339(queued_at),
        "finished_at": _rfc3339(finished_at),
        "duration_s": (finished_at - (started_at or queued_at)).total_seconds(),
        "status": status,
        "owner": owner,
    }
    if started_at is not None:
        job["started_at"] = _rfc3339(started_at)
    return {
        "base_model": base_model_lineage(spec),
        "dataset": {
            "filename": config.dataset,
            "path": spec.dataset_path,
            "sha256": dataset_sha256,
            "num_rows": num_rows,
            "train_rows": int(used.get("train_examples", 0)),
            "eval_rows": int(used.get("eval_examples", 0)),
            "eval_split": config.eval_split,
            "seed": config.seed,
            # The column mapping and the source (CSV/Parquet/JSON file, Hub revision and sha) stored
            # beside the dataset file, when it has them.
            **dataset_origin(spec.dataset_path),
        },
        # Where this run's series can be seen (modelforge_training/tracking.py) is no setting: a rerun has others.
        "config": {name: value for name, value in used.items() if name not in RUN_LOCATIONS},
        "task": config.task,
        "strategy": config.strategy,
        "provider": config.provider,
        "environment": {
            "versions": installed_versions(config.provider),
            "device": str(used.get("device", "cpu")),
            "python": platform.python_version(),
            # How many processes trained it and how (issue 19): a loss curve depends on both.
            "world_size": world_size(config),
            "distributed": config.distributed,
            "processes_per_node": config.processes_per_node,
            "num_nodes": config.num_nodes,
        },
        "job": {k: v for k, v in job.items() if v is not None},
        "metrics": dict(metrics),
        "loss_curve": loss_curve.as_list(),
    }
