"""The job spec (modelforge.v1.TrainingJobSpec): the one record trainer-svc hands this runtime, as
JSON (json_format). `read_spec` refuses unknown fields and bad values, so a bad file ends the runtime
with a clear message before anything is loaded; every layer then receives the message unchanged.
Plain protobuf: trainer-svc imports this module to write the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format

from modelforge.v1 import common_pb2, training_job_pb2
from modelforge_training.settings import bound_problems

TrainingJobSpec = training_job_pb2.TrainingJobSpec
TrainingConfig = common_pb2.TrainingConfig

DDP = "ddp"
FSDP = "fsdp"
DISTRIBUTED_MODE_NAMES = (DDP, FSDP)
_REQUIRED = ("job_id", "dataset_path", "output_dir", "checkpoint_dir", "result_path")
_REQUIRED_CONFIG = ("task", "model_name", "provider", "strategy")
# Keys of a spec flattened for records (registry config, MLflow params): the config's fields plus these.
_RECORDED_PATHS = ("dataset_path", "eval_dataset_path", "local_model")


class BadSpec(ValueError):
    """A job file that cannot be run: what is wrong, by field."""


def write_spec(spec: TrainingJobSpec, path: Path) -> None:
    path.write_text(json_format.MessageToJson(spec, preserving_proto_field_name=True, indent=2), encoding="utf-8")


def parse_spec(text: str) -> TrainingJobSpec:
    """The spec in `text`; BadSpec naming what is wrong (unknown field, bad type, missing value, bound)."""
    spec = TrainingJobSpec()
    try:
        json_format.Parse(text, spec, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise BadSpec(str(exc)) from None
    problems = [f"{name} is required" for name in _REQUIRED if not getattr(spec, name)]
    problems += [f"config.{name} is required" for name in _REQUIRED_CONFIG if not getattr(spec.config, name)]
    problems += [f"config.{message}" for _, message in bound_problems(spec.config)]
    if spec.config.distributed and spec.config.distributed not in DISTRIBUTED_MODE_NAMES:
        modes = list(DISTRIBUTED_MODE_NAMES)
        problems.append(f"config.distributed must be one of {modes}, got {spec.config.distributed}")
    if problems:
        raise BadSpec("; ".join(problems))
    return spec


def read_spec(path: Path) -> TrainingJobSpec:
    """The spec in a job file: OSError when it cannot be read, BadSpec when it cannot be run."""
    return parse_spec(path.read_text(encoding="utf-8"))


def world_size(config: TrainingConfig) -> int:
    """Processes of a job: processes_per_node x num_nodes (unset: 1)."""
    return max(1, config.processes_per_node) * max(1, config.num_nodes)


def distributed_mode(config: TrainingConfig) -> str:
    """"ddp" or "fsdp" for a job that runs under torchrun (more than one process, or a mode asked
    for by name), "" for a plain single-process one."""
    if config.distributed:
        return config.distributed
    return DDP if world_size(config) > 1 else ""


def recorded_config(spec: TrainingJobSpec) -> dict[str, Any]:
    """The spec's configuration as a flat dict (every set field; the dataset paths and local_model
    beside them): what the registry and MLflow record. The request-only `force` is left out."""
    values = json_format.MessageToDict(
        spec.config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    values.pop("force", None)
    values.update({name: getattr(spec, name) for name in _RECORDED_PATHS})
    return values


def apply_recorded(spec: TrainingJobSpec, values: dict[str, Any]) -> None:
    """Sets the config fields (and dataset paths) named in `values`, the inverse of recorded_config:
    what the runtime reports it trained with (bf16 off on a CPU), or a job record read back. Keys that
    are neither (device, split sizes) are left to the caller."""
    fields = common_pb2.TrainingConfig.DESCRIPTOR.fields_by_name
    known = {name: value for name, value in values.items() if name in fields and value is not None}
    json_format.ParseDict(known, spec.config)
    for name in _RECORDED_PATHS:
        if values.get(name) is not None:
            setattr(spec, name, type(getattr(spec, name))(values[name]))
