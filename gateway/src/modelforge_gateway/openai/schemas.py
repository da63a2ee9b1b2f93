"""Request bodies of the /v1 API as the openai SDK sends them. Parameters ModelForge cannot honour
are refused by name (unsupported()) rather than ignored; parameters that change nothing about the
answer (user, store, service_tier, ...) are accepted and ignored, as OpenAI-compatible servers do."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelforge_gateway.openai_errors import OpenAIError

Auto = Literal["auto"]
TEXT_PART = '{"type": "text", "text": ...}'
Epochs = Auto | Annotated[int, Field(ge=1, le=100)]
BatchSize = Auto | Annotated[int, Field(ge=1, le=1024)]
Multiplier = Auto | Annotated[float, Field(gt=0, le=100)]
Beta = Auto | Annotated[float, Field(gt=0, le=10)]
Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(gt=0, le=1)]
MaxTokens = Annotated[int, Field(ge=1, le=4096)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(Strict):
    n_epochs: Epochs | None = None
    batch_size: BatchSize | None = None
    learning_rate_multiplier: Multiplier | None = None


class DpoHyperparameters(Hyperparameters):
    beta: Beta | None = None


class SupervisedMethod(Strict):
    hyperparameters: Hyperparameters | None = None


class DpoMethod(Strict):
    hyperparameters: DpoHyperparameters | None = None


class Method(Strict):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict[str, Any] | None = None


class CreateFineTuningJob(Strict):
    model: Annotated[str, Field(min_length=1, max_length=1000)]
    training_file: Annotated[str, Field(min_length=1, max_length=300)]
    validation_file: str | None = None
    suffix: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    seed: Seed | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool | None = None


class GenerationBody(BaseModel):
    """What chat and text completions share."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(min_length=1, max_length=300)]
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Seed | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def check_common(self) -> None:
        if self.n not in (None, 1):
            raise unsupported("n", "only n=1 is supported")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise unsupported(name, "is not supported (only 0)")
        if self.logit_bias:
            raise unsupported("logit_bias", "is not supported")


class ChatCompletionBody(GenerationBody):
    messages: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=1000)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None

    def check(self) -> None:
        self.check_common()
        if self.logprobs or self.top_logprobs:
            raise unsupported("logprobs", "is not supported")
        if self.tools or self.functions:
            raise unsupported("tools", "tool and function calling is not supported")
        if self.tool_choice not in (None, "none", "auto"):
            raise unsupported("tool_choice", "tool calling is not supported")
        if self.response_format and self.response_format.get("type") != "text":
            raise unsupported("response_format", "only {\"type\": \"text\"} is supported")
        if self.modalities and self.modalities != ["text"]:
            raise unsupported("modalities", "only [\"text\"] is supported")

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def turns(self) -> list[tuple[str, str]]:
        """(role, text) of each message; "developer" is OpenAI's newer name for system."""
        turns = []
        for index, message in enumerate(self.messages):
            role = message.get("role")
            if role == "developer":
                role = "system"
            if role not in ("system", "user", "assistant"):
                raise OpenAIError(
                    400, f"messages[{index}].role: {role!r} is not supported; use system, user or assistant",
                    f"messages[{index}].role",
                )
            turns.append((str(role), _content_text(message.get("content"), index)))
        return turns


def _content_text(content: Any, index: int) -> str:
    param = f"messages[{index}].content"
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                where = f"{param}[{part_index}]"
                raise OpenAIError(400, f"{where}: only text content parts ({TEXT_PART}) are supported", where)
            texts.append(part["text"])
        return "".join(texts)
    raise OpenAIError(400, f"{param}: must be a string or a list of text parts", param)


class CompletionBody(GenerationBody):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    echo: bool | None = None
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    def check(self) -> None:
        self.check_common()
        if self.echo:
            raise unsupported("echo", "is not supported")
        if self.logprobs:
            raise unsupported("logprobs", "is not supported")
        if self.suffix:
            raise unsupported("suffix", "is not supported")
        if self.best_of not in (None, 1):
            raise unsupported("best_of", "only best_of=1 is supported")

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def unsupported(param: str, why: str) -> OpenAIError:
    return OpenAIError(400, f"{param}: {why}", param, "unsupported_parameter")
