"""The training settings of a start request, derived from the proto (one schema per boundary).

Every TrainingConfig field that carries the `(modelforge.v1.setting)` option is a field of
TrainingParams: its type from the field's (double -> float, int32/int64 -> int, bool -> bool,
string -> str), its bounds and description from the option, default None (the trainer fills the
default). A setting added to the proto with the option is in the REST API, its OpenAPI document and
its validation without a gateway edit. Only the fields with choices or identities stay explicit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from google.protobuf.descriptor import FieldDescriptor
from pydantic import Field, create_model
from pydantic.fields import FieldInfo

from modelforge.v1 import common_pb2, options_pb2
from modelforge_gateway.common.body import (
    Body,
    LrSchedulerName,
    NonBlank,
    OptimizerName,
    ProfileName,
    ProviderName,
    StrategyName,
    TaskName,
)

_PYTHON_TYPES: dict[int, type] = {
    FieldDescriptor.TYPE_DOUBLE: float,
    FieldDescriptor.TYPE_FLOAT: float,
    FieldDescriptor.TYPE_INT32: int,
    FieldDescriptor.TYPE_INT64: int,
    FieldDescriptor.TYPE_UINT32: int,
    FieldDescriptor.TYPE_UINT64: int,
    FieldDescriptor.TYPE_BOOL: bool,
    FieldDescriptor.TYPE_STRING: str,
}

# TrainingConfig.distributed: how several processes share the work.
DistributedName = Literal["ddp", "fsdp"]


class ExplicitTrainingParams(Body):
    """The settings a descriptor cannot describe: choices, names and identities. Booleans without
    the option are declared here too; once the proto gives one the option, the derived field wins."""

    provider: ProviderName = "huggingface"
    strategy: StrategyName = "sft"
    dataset: NonBlank
    use_4bit: bool | None = None
    bf16: bool | None = None
    gradient_checkpointing: bool | None = None
    lr_scheduler_type: LrSchedulerName | None = None
    optim: OptimizerName | None = None
    name: str | None = Field(None, max_length=200)
    compute_specs: ProfileName | None = None
    force: bool = False
    resume_from_job: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]{1,128}$", description="A job id")
    distributed: DistributedName | None = Field(
        None, description="How several processes share the work (ddp when unset with more than one process)"
    )

    def to_pb(self, task: str, model_name: str) -> common_pb2.TrainingConfig:
        fields = self.model_dump(exclude_none=True, exclude={"task", "model_name", "dataset_sha256"})
        return common_pb2.TrainingConfig(task=task, model_name=model_name, **fields)


# Fields that stay explicit even if the proto gives them the option (their rules are choices).
EXPLICIT_FIELDS = frozenset(
    {"task", "model_name", "dataset", "provider", "strategy", "lr_scheduler_type", "optim", "compute_specs"}
    | {"distributed", "name", "resume_from_job", "force", "dataset_sha256"}
)


def setting_rule(field: FieldDescriptor) -> options_pb2.SettingRule | None:
    options = field.GetOptions()
    if not options.HasExtension(options_pb2.setting):
        return None
    rule: options_pb2.SettingRule = options.Extensions[options_pb2.setting]
    return rule


def setting_fields() -> list[FieldDescriptor]:
    """TrainingConfig's fields carrying the setting option, in field-number order."""
    found = [f for f in common_pb2.TrainingConfig.DESCRIPTOR.fields if setting_rule(f) is not None]
    return sorted((f for f in found if f.name not in EXPLICIT_FIELDS), key=lambda f: f.number)


def _bound(value: float) -> float | int:
    # 1000.0 documents as 1000, as a hand-written bound would.
    return int(value) if value.is_integer() else value


def derived_field(field: FieldDescriptor, rule: options_pb2.SettingRule) -> tuple[Any, FieldInfo]:
    """The (annotation, FieldInfo) of one option-carrying TrainingConfig field."""
    python_type = _PYTHON_TYPES.get(field.type)
    if python_type is None or field.is_repeated:
        raise TypeError(f"TrainingConfig.{field.name}: the setting option is for numbers, booleans and strings")
    constraints: dict[str, Any] = {}
    if python_type in (int, float):
        if rule.HasField("min"):
            constraints["gt" if rule.min_exclusive else "ge"] = _bound(rule.min)
        if rule.HasField("max"):
            constraints["lt" if rule.max_exclusive else "le"] = _bound(rule.max)
    if field.type == FieldDescriptor.TYPE_INT32:
        # An unbounded side still stays inside the field (an int32 overflow would be a 500).
        if not rule.HasField("min"):
            constraints["ge"] = -(2**31)
        if not rule.HasField("max"):
            constraints["le"] = 2**31 - 1
    if python_type is str and rule.max_length:
        constraints["max_length"] = rule.max_length
    info: FieldInfo = Field(None, description=rule.description or None, **constraints)
    return python_type | None, info


def setting_field(name: str) -> Any:
    """The pydantic Field of TrainingConfig.<name> (bounds and description from its setting option),
    for another body that takes the same setting under the same name (Any: it is a field's default)."""
    field = common_pb2.TrainingConfig.DESCRIPTOR.fields_by_name[name]
    rule = setting_rule(field)
    if rule is None:
        raise TypeError(f"TrainingConfig.{name} carries no setting option")
    return derived_field(field, rule)[1]


def _derived_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field in setting_fields():
        rule = setting_rule(field)
        assert rule is not None  # setting_fields() keeps only fields with the option
        fields[field.name] = derived_field(field, rule)
    return fields


if TYPE_CHECKING:
    # Type checkers see the explicit fields; the derived ones are read through model_dump.
    TrainingParams = ExplicitTrainingParams
else:
    TrainingParams = create_model(
        "TrainingParams",
        __base__=ExplicitTrainingParams,
        __module__=__name__,
        __doc__="Every TrainingConfig setting except task/model_name; unset ones take the trainer's defaults.",
        **_derived_fields(),
    )


class StartTrainingRequest(TrainingParams):
    task: TaskName
    model_name: NonBlank
    # Checked by the gateway against the registry's copy before the trainer is called (409 on a
    # mismatch): GET /api/models/{id}/lineage puts it in its `reproduce` body.
    dataset_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 the stored dataset must still have (lowercase hex)"
    )
