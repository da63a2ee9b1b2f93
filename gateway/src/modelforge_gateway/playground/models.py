"""Request and response bodies of the playground."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from modelforge_gateway.common.body import JSON_SAFE_INT, Body

DEFAULT_MAX_NEW_TOKENS = 256


class ChatMessageBody(Body):
    """One chat turn; the model's chat template is applied to the whole conversation."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class GenerateRequest(Body):
    """rest-api.md generate; /api/playground/new's max_length is accepted as max_new_tokens.
    `messages` (a conversation) may be sent instead of `prompt`."""

    # The OpenAPI document says what _needs_input checks: a non-blank prompt, question or conversation.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["prompt"], "properties": {"prompt": {"pattern": r"\S"}}},
                {"required": ["question"], "properties": {"question": {"pattern": r"\S"}}},
                {
                    "required": ["messages"],
                    "properties": {
                        "messages": {"minItems": 1, "items": {"properties": {"content": {"pattern": r"\S"}}}}
                    },
                },
            ]
        },
    )

    # Integer bounds stay within 2**53: a JSON number above it is not exact in most clients (nor in
    # a schema validator), so the document's bound would not be the one enforced.
    model_id: Annotated[int, Field(ge=0, le=JSON_SAFE_INT)] | Annotated[str, Field(min_length=1, max_length=300)]
    # Extractive question answering reads these instead of (or besides) the prompt; declared
    # before `prompt` so its check can see them, as are the chat messages.
    context: str = ""
    question: str = ""
    # A conversation, when given, is what the model answers (it wins over prompt), so one with only
    # blank turns is refused whatever else the body holds.
    messages: list[ChatMessageBody] = Field(
        default_factory=list,
        max_length=1000,
        json_schema_extra={"anyOf": [{"maxItems": 0}, {"contains": {"properties": {"content": {"pattern": r"\S"}}}}]},
    )
    # Checked even when left out: a request needs a prompt, a question or messages.
    prompt: str = Field("", validate_default=True)
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    max_length: int | None = Field(None, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1000)
    # inference-svc's bounds: far below 1 the penalty overflows the logits it divides.
    repetition_penalty: float | None = Field(None, ge=0.01, le=10)
    # Generation ends before any of these strings (not returned).
    stop: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=16)
    seed: int | None = Field(None, ge=-JSON_SAFE_INT, le=JSON_SAFE_INT)

    @field_validator("messages")
    @classmethod
    def _some_turn_has_text(cls, messages: list[ChatMessageBody]) -> list[ChatMessageBody]:
        # Checked here, not in _needs_input, so the 400 names `messages`, the field that is wrong.
        if messages and not any(m.content.strip() for m in messages):
            raise PydanticCustomError("value_error", "every message is empty or blank")
        return messages

    @field_validator("prompt")
    @classmethod
    def _needs_input(cls, prompt: str, info: ValidationInfo) -> str:
        if "messages" not in info.data:
            # The conversation was refused with its own error; a second one about prompt would mislead.
            return prompt
        messages = info.data["messages"]
        if prompt.strip() or str(info.data.get("question", "")).strip() or messages:
            return prompt
        raise PydanticCustomError("value_error", "prompt must not be empty (or send messages)")

    @property
    def tokens(self) -> int:
        return self.max_new_tokens or self.max_length or DEFAULT_MAX_NEW_TOKENS


class GenerateResponse(BaseModel):
    generated_text: str
    tokens_generated: int
    generation_time_ms: int
    model_id: str
    score: float | None = None
    start: int | None = None
    end: int | None = None
    # Tokens of the input as the model saw it (chat template applied).
    prompt_tokens: int | None = None
    # "stop" (end of sequence or a stop string) | "length" (max_new_tokens reached).
    finish_reason: str | None = None


class PlaygroundNewResponse(GenerateResponse):
    prompt: str


class ModelPathResponse(BaseModel):
    model_path: str
    model_id: str
