"""TrainingParams' settings come from the proto: every TrainingConfig field with the
`(modelforge.v1.setting)` option is accepted with its type, bounds and description, reaches the
trainer, and is documented; a value out of its bounds is a 400 naming the field."""

from __future__ import annotations

import httpx
import pytest
from gateway_fakes import FakeServices
from google.protobuf.descriptor import FieldDescriptor

from modelforge.v1 import common_pb2, options_pb2
from modelforge_gateway.common.training_params import (
    EXPLICIT_FIELDS,
    StartTrainingRequest,
    setting_fields,
    setting_rule,
)
from modelforge_gateway.main import create_app

START = {"task": "text-generation", "model_name": "sshleifer/tiny-gpt2", "dataset": "train.jsonl"}


def option_fields() -> list[FieldDescriptor]:
    """Read straight from the descriptor, independently of the module under test."""
    return [
        field
        for field in common_pb2.TrainingConfig.DESCRIPTOR.fields
        if field.GetOptions().HasExtension(options_pb2.setting) and field.name not in EXPLICIT_FIELDS
    ]


FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


def allowed(rule: options_pb2.SettingRule, value: float) -> bool:
    above = not rule.HasField("min") or (value > rule.min if rule.min_exclusive else value >= rule.min)
    below = not rule.HasField("max") or (value < rule.max if rule.max_exclusive else value <= rule.max)
    return above and below


def inside(field: FieldDescriptor, rule: options_pb2.SettingRule) -> object:
    """A value the rule accepts that is not the field's zero (so that it shows in the message)."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_STRING:
        return "x"
    low = rule.min if rule.HasField("min") else 0.0
    high = rule.max if rule.HasField("max") else low + 10
    if field.type in FLOATS:
        return (low + high) / 2
    return next(v for v in range(int(low), int(high) + 1) if v and allowed(rule, v))


def test_the_derived_fields_are_every_option_carrying_field() -> None:
    assert option_fields(), "TrainingConfig has fields with the setting option"
    assert {f.name for f in setting_fields()} == {f.name for f in option_fields()}
    derived = set(StartTrainingRequest.model_fields) - {"task", "model_name", "dataset_sha256"}
    assert {f.name for f in option_fields()} <= derived


@pytest.mark.parametrize("field", option_fields(), ids=lambda f: f.name)
def test_every_option_field_is_accepted_and_reaches_the_config(field: FieldDescriptor) -> None:
    rule = field.GetOptions().Extensions[options_pb2.setting]
    value = inside(field, rule)
    body = StartTrainingRequest.model_validate({**START, field.name: value})
    config = body.to_pb(body.task, body.model_name)
    assert config.HasField(field.name), field.name
    assert getattr(config, field.name) == pytest.approx(value)
    # Unset: default None, so the trainer's own default applies.
    assert not StartTrainingRequest.model_validate(START).to_pb("text-generation", "m").HasField(field.name)


@pytest.mark.parametrize("field", option_fields(), ids=lambda f: f.name)
def test_every_option_field_refuses_what_its_rule_refuses(field: FieldDescriptor) -> None:
    rule = field.GetOptions().Extensions[options_pb2.setting]
    refused: list[object] = ["text"] if field.type != FieldDescriptor.TYPE_STRING else [123]
    if field.type != FieldDescriptor.TYPE_BOOL and field.type != FieldDescriptor.TYPE_STRING:
        refused.append(True)  # a boolean for a number is the caller's mistake
        if rule.HasField("min"):
            refused.append(rule.min if rule.min_exclusive else rule.min - 1)
        if rule.HasField("max"):
            refused.append(rule.max if rule.max_exclusive else rule.max + 1)
    for value in refused:
        with pytest.raises(ValueError) as caught:
            StartTrainingRequest.model_validate({**START, field.name: value})
        assert field.name in str(caught.value), (field.name, value)


def test_lora_dropout_takes_its_bounds_and_description_from_the_proto() -> None:
    rule = setting_rule(common_pb2.TrainingConfig.DESCRIPTOR.fields_by_name["lora_dropout"])
    assert rule is not None and rule.max == 1 and rule.max_exclusive and rule.min == 0
    assert StartTrainingRequest.model_validate({**START, "lora_dropout": 0}).model_dump()["lora_dropout"] == 0
    assert StartTrainingRequest.model_validate({**START, "lora_dropout": 0.99}).model_dump()["lora_dropout"] == 0.99
    for refused in (1, 1.5, -0.01):
        with pytest.raises(ValueError):
            StartTrainingRequest.model_validate({**START, "lora_dropout": refused})
    document = create_app().openapi()
    schema = document["components"]["schemas"]["StartTrainingRequest"]["properties"]["lora_dropout"]
    assert schema["description"] == rule.description == "Dropout on the LoRA branch"
    number = next(option for option in schema["anyOf"] if option.get("type") == "number")
    assert number["minimum"] == 0 and number["exclusiveMaximum"] == 1 and "maximum" not in number


def test_the_document_carries_every_option_field_with_its_description() -> None:
    properties = create_app().openapi()["components"]["schemas"]["StartTrainingRequest"]["properties"]
    for field in option_fields():
        rule = field.GetOptions().Extensions[options_pb2.setting]
        assert field.name in properties, field.name
        if rule.description:
            assert properties[field.name]["description"] == rule.description, field.name


async def test_a_derived_setting_reaches_the_trainer_and_its_bound_is_a_400(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    refused = await client.post("/api/start_training", json={**START, "dpo_beta": 0})
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "dpo_beta"]
    response = await client.post("/api/start_training", json={**START, "strategy": "dpo", "dpo_beta": 0.25})
    assert response.status_code == 200, response.text
    assert fakes.trainer.started[0].dpo_beta == pytest.approx(0.25)
