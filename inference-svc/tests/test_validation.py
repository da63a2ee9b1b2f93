from __future__ import annotations

import pytest

from modelforge_common.errors import InvalidArgument
from modelforge_inference.domain import EXTRACTIVE_QA, SUMMARIZATION, TEXT_GENERATION, RequestedParams
from modelforge_inference.validation import validate_params


def fields_of(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [violation.field for violation in exc.value.violations]


def test_defaults_fill_unset_values() -> None:
    params = validate_params(TEXT_GENERATION, RequestedParams(prompt="hi"), default_max_new_tokens=77)
    assert params.max_new_tokens == 77
    assert params.top_p == 1.0
    assert params.greedy


def test_given_values_are_kept() -> None:
    requested = RequestedParams(prompt="hi", max_new_tokens=4096, temperature=2.0, top_p=0.5, top_k=0,
                                repetition_penalty=1.2)
    params = validate_params(SUMMARIZATION, requested, 100)
    assert (params.max_new_tokens, params.temperature, params.top_p, params.top_k, params.repetition_penalty) == (
        4096, 2.0, 0.5, 0, 1.2)
    assert not params.greedy


@pytest.mark.parametrize(
    ("requested", "field"),
    [
        (RequestedParams(prompt="   "), "prompt"),
        (RequestedParams(prompt="hi", max_new_tokens=0), "max_new_tokens"),
        (RequestedParams(prompt="hi", max_new_tokens=4097), "max_new_tokens"),
        (RequestedParams(prompt="hi", temperature=-0.1), "temperature"),
        (RequestedParams(prompt="hi", temperature=2.01), "temperature"),
        (RequestedParams(prompt="hi", temperature=float("nan")), "temperature"),
        (RequestedParams(prompt="hi", top_p=0.0), "top_p"),
        (RequestedParams(prompt="hi", top_p=1.5), "top_p"),
        (RequestedParams(prompt="hi", top_k=-1), "top_k"),
        (RequestedParams(prompt="hi", repetition_penalty=0.0), "repetition_penalty"),
        # Far below 1 the penalty overflows the logits it divides: sampling then fails (was a 500).
        (RequestedParams(prompt="hi", repetition_penalty=5e-324), "repetition_penalty"),
        (RequestedParams(prompt="hi", repetition_penalty=10.5), "repetition_penalty"),
    ],
)
def test_each_bad_field_is_named(requested: RequestedParams, field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_params(TEXT_GENERATION, requested, 100)
    assert fields_of(exc) == [field]


def test_all_bad_fields_are_reported_together() -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_params(TEXT_GENERATION, RequestedParams(prompt="", max_new_tokens=-3, top_p=2.0, top_k=-5), 100)
    assert fields_of(exc) == ["prompt", "max_new_tokens", "top_p", "top_k"]


def test_qa_needs_context_and_question() -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_params(EXTRACTIVE_QA, RequestedParams(), 100)
    assert fields_of(exc) == ["context", "question"]


def test_qa_takes_the_question_from_the_prompt_when_no_question_is_given() -> None:
    params = validate_params(EXTRACTIVE_QA, RequestedParams(prompt="Who?", context="Ann did."), 100)
    assert params.question == "Who?"
    assert params.context == "Ann did."


def test_a_generation_model_takes_a_lone_question_as_its_prompt() -> None:
    # The public API accepts a prompt, a question or messages whatever the model's task.
    params = validate_params(TEXT_GENERATION, RequestedParams(question="Why?"), 100)
    assert params.prompt == "Why?"
    with pytest.raises(InvalidArgument) as exc:
        validate_params(TEXT_GENERATION, RequestedParams(question="  "), 100)
    assert fields_of(exc) == ["prompt"]


def test_unknown_task_is_refused() -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_params("translation", RequestedParams(prompt="hi"), 100)
    assert fields_of(exc) == ["task"]


def test_a_vanishing_temperature_decodes_greedily() -> None:
    # 9.3e-126 passed validation and overflowed the logits it divided: sampling then failed (a 500, fuzz).
    params = validate_params(TEXT_GENERATION, RequestedParams(prompt="hi", temperature=9.3e-126), 100)
    assert params.greedy
    assert not validate_params(TEXT_GENERATION, RequestedParams(prompt="hi", temperature=0.01), 100).greedy
