"""What inference works with, independent of gRPC: the model to load, the generation request and
its results."""

from __future__ import annotations

from dataclasses import dataclass, field

TEXT_GENERATION = "text-generation"
SUMMARIZATION = "summarization"
EXTRACTIVE_QA = "extractive-question-answering"
ADAPTER_TYPES = ("lora", "full")
CHAT_ROLES = ("system", "user", "assistant")
# Why generation ended: end of sequence or a stop string, or max_new_tokens reached.
FINISH_STOP = "stop"
FINISH_LENGTH = "length"
# Temperatures below this decode greedily (logits / 1e-126 are inf: no distribution to sample from).
GREEDY_BELOW_TEMPERATURE = 1e-4


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class ModelRef:
    """A registered model as the registry describes it (see inference.proto ModelRef)."""

    model_id: str
    base_model: str
    path: str
    task: str
    adapter_type: str
    file_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def cache_key(self) -> tuple[str, str, str, str]:
        # A re-registered model with the same id but other files must not be served from the cache.
        return (self.model_id, self.path, self.base_model, self.adapter_type)


@dataclass(frozen=True)
class RequestedParams:
    """Generation settings as a caller sent them; None means "not given" (use the default)."""

    prompt: str = ""
    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    context: str = ""
    question: str = ""
    messages: tuple[ChatMessage, ...] = ()
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class GenerationParams:
    """Validated generation settings; `temperature == 0` (or below GREEDY_BELOW_TEMPERATURE) means
    greedy decoding."""

    prompt: str = ""
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float | None = None
    context: str = ""
    question: str = ""
    # Chat turns; when present they are the input instead of `prompt`.
    messages: tuple[ChatMessage, ...] = ()
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        # Dividing logits by a temperature this small overflows them to inf and sampling fails;
        # the distribution it asks for is the argmax anyway.
        return self.temperature < GREEDY_BELOW_TEMPERATURE


@dataclass(frozen=True)
class GenerationResult:
    generated_text: str
    tokens_generated: int
    generation_time_ms: int
    # Extractive QA only: the answer span in the context (character offsets, end exclusive).
    score: float | None = None
    start: int | None = None
    end: int | None = None
    # Tokens of the input as the model saw it (chat template applied).
    prompt_tokens: int = 0
    finish_reason: str = FINISH_STOP


@dataclass(frozen=True)
class StreamChunk:
    """A piece of generated text; the last chunk has `finished` set and carries the totals."""

    text: str
    finished: bool = False
    tokens_generated: int = 0
    generation_time_ms: int = 0
    # On the last chunk only.
    prompt_tokens: int = 0
    finish_reason: str = ""
