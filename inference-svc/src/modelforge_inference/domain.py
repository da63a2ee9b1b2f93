"""What inference works with, independent of gRPC: the model to load, the generation request and
its results."""

from __future__ import annotations

from dataclasses import dataclass, field

TEXT_GENERATION = "text-generation"
SUMMARIZATION = "summarization"
EXTRACTIVE_QA = "extractive-question-answering"
ADAPTER_TYPES = ("lora", "full")


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


@dataclass(frozen=True)
class GenerationParams:
    """Validated generation settings; `temperature == 0` means greedy decoding."""

    prompt: str = ""
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float | None = None
    context: str = ""
    question: str = ""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerationResult:
    generated_text: str
    tokens_generated: int
    generation_time_ms: int
    # Extractive QA only: the answer span in the context (character offsets, end exclusive).
    score: float | None = None
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class StreamChunk:
    """A piece of generated text; the last chunk has `finished` set and carries the totals."""

    text: str
    finished: bool = False
    tokens_generated: int = 0
    generation_time_ms: int = 0
