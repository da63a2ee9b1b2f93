"""The rules every request body follows (rest-api.md, DESIGN 3): unknown fields and booleans for
numbers are refused with 400 naming the field, choices answer the documented message.

Request models reject bad input with 400 before any service is called; the services check again
(they are the authority on what a dataset or model holds).
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from modelforge_common.catalog import PROFILES, PROVIDERS, STRATEGIES, TASKS
from modelforge_common.training_options import LR_SCHEDULERS, OPTIMIZERS  # the trainer's own lists


def invalid_choice_message(what: str, value: str, choices: tuple[str, ...]) -> str:
    """The responses.md wording: "Invalid task: xyz. Must be one of ['text-generation', ...]"."""
    return f"Invalid {what}: {value}. Must be one of {list(choices)}"


def _one_of(what: str, choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            # The message goes through as a template argument so braces in `value` stay literal.
            message = invalid_choice_message(what, value, choices)
            raise PydanticCustomError("value_error", "{message}", {"message": message})
        return value

    return AfterValidator(check)


def _choices(choices: tuple[str, ...]) -> WithJsonSchema:
    """The OpenAPI document lists the accepted values (the check above keeps the documented message)."""
    return WithJsonSchema({"type": "string", "enum": list(choices)})


# Model names and dataset paths: a Hub id, a file name or a path, never whitespace only.
NON_BLANK_MAX_LENGTH = 1024


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("value_error", "must not be empty")
    if len(value) > NON_BLANK_MAX_LENGTH:
        raise PydanticCustomError("value_error", f"must be at most {NON_BLANK_MAX_LENGTH} characters")
    return value.strip()


TaskName = Annotated[str, _one_of("task", TASKS), _choices(TASKS)]
ProviderName = Annotated[str, _one_of("provider", PROVIDERS), _choices(PROVIDERS)]
StrategyName = Annotated[str, _one_of("strategy", STRATEGIES), _choices(STRATEGIES)]
ProfileName = Annotated[str, _one_of("compute_specs", PROFILES), _choices(PROFILES)]
LrSchedulerName = Annotated[str, _one_of("lr_scheduler_type", LR_SCHEDULERS), _choices(LR_SCHEDULERS)]
OptimizerName = Annotated[str, _one_of("optim", OPTIMIZERS), _choices(OPTIMIZERS)]
NonBlank = Annotated[
    str,
    AfterValidator(_not_blank),
    WithJsonSchema({"type": "string", "pattern": r"\S", "maxLength": NON_BLANK_MAX_LENGTH}),
]


# Bounds keep every value inside its protobuf field (an int32 overflow would otherwise be a 500).
INT32_MAX = 2**31 - 1
JSON_SAFE_INT = 2**53 - 1


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or any(_takes_bool(arg) for arg in get_args(annotation))


class Body(BaseModel):
    # One rule for every request body: a field the API does not know is refused with 400 naming it,
    # never dropped silently (the caller would believe a setting applied that did not).
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true/false as 1/0 for a number; the document says integer or
        # number, so a boolean there is the caller's mistake (e.g. "seed": false), not a zero.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
            raise PydanticCustomError("type_error", "must not be true or false")
        return value
