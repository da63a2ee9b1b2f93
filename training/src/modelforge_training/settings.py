"""TrainingConfig's settings as protos/modelforge/v1/common.proto declares them: each setting's
SettingRule (bounds, default, description) read from the field's options, and the one bounds check
every layer applies (trainer-svc when a request comes in, this runtime when it reads a job file).
Plain protobuf: trainer-svc imports this module."""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from modelforge.v1 import common_pb2, options_pb2

_NUMBER_KINDS = (
    FieldDescriptor.CPPTYPE_DOUBLE,
    FieldDescriptor.CPPTYPE_FLOAT,
    FieldDescriptor.CPPTYPE_INT32,
    FieldDescriptor.CPPTYPE_INT64,
    FieldDescriptor.CPPTYPE_UINT32,
    FieldDescriptor.CPPTYPE_UINT64,
)


def has_field(message: Message, name: str) -> bool:
    """HasField for a name known only at run time (generated stubs accept only literal names)."""
    return message.HasField(name)


def clear_field(message: Message, name: str) -> None:
    message.ClearField(name)


@dataclass(frozen=True)
class Setting:
    """One TrainingConfig field that carries a SettingRule."""

    name: str
    rule: options_pb2.SettingRule
    is_integer: bool

    @property
    def default(self) -> float | bool | str | None:
        """The rule's default (None where the trainer's own rule applies)."""
        kind = self.rule.WhichOneof("default")
        if kind is None:
            return None
        value: float | bool | str = getattr(self.rule, kind)
        if kind == "number_default" and self.is_integer:
            return int(value)
        return value

    def problem(self, value: float | int) -> str | None:
        """'<name> must be >= 1 and <= 4096, got 0' for a value out of bounds, None for a good one."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.name} must be a finite number, got {value}"
        rule = self.rule
        too_low = rule.HasField("min") and (value <= rule.min if rule.min_exclusive else value < rule.min)
        too_high = rule.HasField("max") and (value >= rule.max if rule.max_exclusive else value > rule.max)
        if not (too_low or too_high):
            return None
        bounds = []
        if rule.HasField("min"):
            bounds.append(f"{'>' if rule.min_exclusive else '>='} {_number(rule.min)}")
        if rule.HasField("max"):
            bounds.append(f"{'<' if rule.max_exclusive else '<='} {_number(rule.max)}")
        return f"{self.name} must be {' and '.join(bounds)}, got {_number(value)}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _settings() -> dict[str, Setting]:
    found = {}
    for field in common_pb2.TrainingConfig.DESCRIPTOR.fields:
        options = field.GetOptions()
        if options.HasExtension(options_pb2.setting):
            integer = field.cpp_type in _NUMBER_KINDS and field.cpp_type not in _NUMBER_KINDS[:2]
            found[field.name] = Setting(field.name, options.Extensions[options_pb2.setting], integer)
    return found


# In the proto's order, which is the order problems are reported in.
SETTINGS: dict[str, Setting] = _settings()


def bound_problems(config: common_pb2.TrainingConfig) -> list[tuple[str, str]]:
    """(field, message) for every number setting that is set and out of its rule's bounds."""
    problems = []
    for setting in SETTINGS.values():
        if not has_field(config, setting.name):
            continue
        value = getattr(config, setting.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        message = setting.problem(value)
        if message is not None:
            problems.append((setting.name, message))
    return problems
