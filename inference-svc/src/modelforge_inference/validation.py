"""Checks generation settings against the task, reporting every bad field at once with the
names the public API uses."""

from __future__ import annotations

import math

from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_inference.domain import (
    CHAT_ROLES,
    EXTRACTIVE_QA,
    SUMMARIZATION,
    TEXT_GENERATION,
    GenerationParams,
    RequestedParams,
)

TASKS = (TEXT_GENERATION, SUMMARIZATION, EXTRACTIVE_QA)
MAX_NEW_TOKENS_LIMIT = 4096
MAX_TEMPERATURE = 2.0
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 200
MAX_MESSAGES = 1000
# A penalty divides (or multiplies) the logits of seen tokens: far below 1 it overflows them to inf,
# and sampling from inf logits fails. 1 is no penalty; usual values lie between 1 and 2.
MIN_REPETITION_PENALTY = 0.01
MAX_REPETITION_PENALTY = 10.0


def _message_violations(requested: RequestedParams) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if len(requested.messages) > MAX_MESSAGES:
        violations.append(FieldViolation("messages", f"at most {MAX_MESSAGES} messages, got {len(requested.messages)}"))
    for index, message in enumerate(requested.messages):
        if message.role not in CHAT_ROLES:
            shown = repr(message.role) if message.role else "empty"
            violations.append(
                FieldViolation(f"messages[{index}].role", f"role is {shown}; expected one of {list(CHAT_ROLES)}")
            )
    if requested.messages and not any(m.content.strip() for m in requested.messages):
        violations.append(FieldViolation("messages", "every message is empty"))
    return violations


def _stop_violations(stop: tuple[str, ...]) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if len(stop) > MAX_STOP_STRINGS:
        violations.append(FieldViolation("stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(stop)}"))
    for index, text in enumerate(stop):
        if not text:
            violations.append(FieldViolation(f"stop[{index}]", "a stop string must not be empty"))
        elif len(text) > MAX_STOP_LENGTH:
            violations.append(FieldViolation(f"stop[{index}]", f"at most {MAX_STOP_LENGTH} characters"))
    return violations


def validate_params(task: str, requested: RequestedParams, default_max_new_tokens: int) -> GenerationParams:
    """Returns the settings to generate with, or raises InvalidArgument listing each bad field.

    For extractive QA the question may come in `prompt` (the public playground has only a prompt).
    """
    violations: list[FieldViolation] = []
    if task not in TASKS:
        violations.append(FieldViolation("task", f"unsupported task {task!r}; expected one of {list(TASKS)}"))

    question = requested.question.strip() or requested.prompt.strip()
    if task == EXTRACTIVE_QA:
        if not requested.context.strip():
            violations.append(FieldViolation("context", "extractive question answering needs a non-empty context"))
        if not question:
            violations.append(FieldViolation("question", "extractive question answering needs a question"))
        if requested.messages:
            message = "extractive question answering takes a context and a question"
            violations.append(FieldViolation("messages", message))
    elif requested.messages:
        violations.extend(_message_violations(requested))
    elif not (requested.prompt.strip() or requested.question.strip()):
        violations.append(FieldViolation("prompt", "prompt must not be empty"))
    violations.extend(_stop_violations(requested.stop))

    max_new_tokens = default_max_new_tokens if requested.max_new_tokens is None else requested.max_new_tokens
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
        violations.append(
            FieldViolation("max_new_tokens", f"must be between 1 and {MAX_NEW_TOKENS_LIMIT}, got {max_new_tokens}")
        )
    temperature = requested.temperature
    if not (math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE):
        violations.append(
            FieldViolation("temperature", f"must be between 0 and {MAX_TEMPERATURE:g} (0 = greedy), got {temperature}")
        )
    top_p = 1.0 if requested.top_p is None else requested.top_p
    if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        violations.append(FieldViolation("top_p", f"must be greater than 0 and at most 1, got {top_p}"))
    if requested.top_k is not None and requested.top_k < 0:
        violations.append(FieldViolation("top_k", f"must be 0 (disabled) or positive, got {requested.top_k}"))
    penalty = requested.repetition_penalty
    if penalty is not None and not (
        math.isfinite(penalty) and MIN_REPETITION_PENALTY <= penalty <= MAX_REPETITION_PENALTY
    ):
        violations.append(FieldViolation(
            "repetition_penalty",
            f"must be between {MIN_REPETITION_PENALTY:g} and {MAX_REPETITION_PENALTY:g} (1 = none), got {penalty}",
        ))

    if violations:
        raise InvalidArgument("invalid generation parameters: " + "; ".join(v.field for v in violations), violations)
    return GenerationParams(
        # A generation model given only a question (the public API allows either) takes it as the prompt.
        prompt=requested.prompt if requested.prompt.strip() or task == EXTRACTIVE_QA else requested.question,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=requested.top_k,
        repetition_penalty=penalty,
        context=requested.context,
        question=question if task == EXTRACTIVE_QA else requested.question,
        messages=requested.messages,
        stop=requested.stop,
        seed=requested.seed,
    )
