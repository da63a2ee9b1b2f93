"""transformers + peft work for the local backend: loading, generation and extractive QA.

This is the only module that imports torch at import time; the local backend imports it lazily,
so the service starts (and serves a TGI backend) without loading torch. Everything here blocks:
callers run it in a worker thread.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.utils import logging as transformers_logging

from modelforge_common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from modelforge_inference.artifacts import estimate_weight_bytes, model_folder, verify_artifacts
from modelforge_inference.domain import EXTRACTIVE_QA, GenerationParams, ModelRef
from modelforge_inference.prompts import build_input
from modelforge_inference.streaming import TokenStreamer

log = logging.getLogger(__name__)
# Progress bars would write into the service's JSON log stream.
transformers_logging.disable_progress_bar()

_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.txt")
QA_MAX_ANSWER_TOKENS = 30
QA_DEFAULT_MAX_LENGTH = 384


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    is_encoder_decoder: bool
    nbytes: int
    # One generation at a time per model (held by the async side around each worker-thread call).
    lock: Any = field(default=None)


@dataclass(frozen=True)
class QaAnswer:
    text: str
    score: float
    start: int
    end: int
    tokens: int


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype_for(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _weights_source(ref: ModelRef) -> str:
    """Where the full weights come from: the base model for an adapter, the folder itself otherwise."""
    if ref.adapter_type == "lora":
        if not ref.base_model:
            raise FailedPrecondition(f"model {ref.model_id!r} is a LoRA adapter without a recorded base model")
        return ref.base_model
    return ref.path


def estimate_bytes(ref: ModelRef, device: str) -> int:
    """Loaded size of the base weights plus the adapter, in the dtype they will load in."""
    folder = model_folder(ref)
    width = torch.tensor([], dtype=_dtype_for(device)).element_size()
    total = estimate_weight_bytes(Path(_weights_source(ref)), width)
    if ref.adapter_type == "lora":
        total += estimate_weight_bytes(folder, None)
    return total


def _model_class(task: str, config: Any) -> Any:
    if task == EXTRACTIVE_QA:
        return AutoModelForQuestionAnswering
    if getattr(config, "is_encoder_decoder", False):
        return AutoModelForSeq2SeqLM
    return AutoModelForCausalLM


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def _parameter_bytes(model: Any) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def load_weights(ref: ModelRef, device: str, dtype: Any) -> tuple[Any, Any, Any]:
    """Base (+ LoRA adapter), tokenizer and config, after verifying the artifacts. `dtype` is a
    torch dtype or "auto" (the checkpoint's own)."""
    if ref.adapter_type not in ("lora", "full"):
        raise FailedPrecondition(f"model {ref.model_id!r} has unknown adapter_type {ref.adapter_type!r}")
    verify_artifacts(ref)
    folder = Path(ref.path)
    source = _weights_source(ref)
    local = Path(source).is_dir()
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local)
        tokenizer_source = str(folder) if _has_tokenizer(folder) else source
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, local_files_only=Path(tokenizer_source).is_dir())
        model_class = _model_class(ref.task, config)
        device_map = {"": device} if device.startswith("cuda") else None
        model = model_class.from_pretrained(source, dtype=dtype, local_files_only=local, device_map=device_map)
    except OSError as exc:
        raise NotFound(f"weights of {source!r} for model {ref.model_id!r} are not available: {exc}") from exc
    except ValueError as exc:
        raise FailedPrecondition(f"model {ref.model_id!r} cannot be loaded for task {ref.task!r}: {exc}") from exc
    if device_map is None:
        model.to(device)
    embeddings = model.get_input_embeddings()
    if embeddings is not None and len(tokenizer) > embeddings.num_embeddings:
        # Training added tokens (a pad token, say); the adapter's saved embeddings expect that size.
        model.resize_token_embeddings(len(tokenizer))
    if ref.adapter_type == "lora":
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        except (OSError, ValueError, KeyError) as exc:
            raise FailedPrecondition(f"LoRA adapter of model {ref.model_id!r} cannot be loaded: {exc}") from exc
    model.eval()
    return model, tokenizer, config


def load_model(ref: ModelRef, device: str) -> LoadedModel:
    """Verifies the artifacts, then loads base (+ adapter) and tokenizer onto `device`."""
    model, tokenizer, config = load_weights(ref, device, _dtype_for(device))
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        is_encoder_decoder=bool(getattr(config, "is_encoder_decoder", False)),
        nbytes=_parameter_bytes(model),
    )
    log.info("loaded model %s (%s, %s bytes) on %s", ref.model_id, ref.adapter_type, loaded.nbytes, device)
    return loaded


def release_memory() -> None:
    """Returns memory of dropped models: collect cycles, then hand cached CUDA blocks back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _StopWhenSet(StoppingCriteria):
    """Stops generate() when the caller went away."""

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self._cancel.is_set(), dtype=torch.bool, device=input_ids.device)


def _context_limit(model: Any) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
    if params.greedy:
        # Neutral sampling values so a model's own generation_config (temperature 0.6, ...) does not
        # trigger "set but unused" warnings.
        kwargs: dict[str, Any] = {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50}
    else:
        kwargs = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        if params.top_k is not None:
            kwargs["top_k"] = params.top_k
    if params.repetition_penalty is not None:
        kwargs["repetition_penalty"] = params.repetition_penalty
    return kwargs


def generate_text(
    loaded: LoadedModel,
    task: str,
    params: GenerationParams,
    streamer: TokenStreamer | None = None,
    cancel: threading.Event | None = None,
) -> tuple[str, int]:
    """Runs generate(); returns the new text (prompt excluded) and the number of new tokens."""
    tokenizer = loaded.tokenizer
    model_input = build_input(task, params, tokenizer, loaded.is_encoder_decoder)
    encoded = tokenizer(model_input.text, return_tensors="pt", add_special_tokens=model_input.add_special_tokens)
    prompt_tokens = int(encoded["input_ids"].shape[1])
    limit = None if loaded.is_encoder_decoder else _context_limit(loaded.model)
    if limit is not None and prompt_tokens + params.max_new_tokens > limit:
        field_name = "prompt" if prompt_tokens >= limit else "max_new_tokens"
        message = (
            f"the prompt is {prompt_tokens} tokens; with max_new_tokens {params.max_new_tokens} it exceeds"
            f" the model's context of {limit} tokens"
        )
        raise InvalidArgument(message, [FieldViolation(field_name, message)])
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stopping = StoppingCriteriaList([_StopWhenSet(cancel)]) if cancel is not None else None
    with torch.inference_mode():
        output = loaded.model.generate(
            **encoded.to(loaded.device),
            max_new_tokens=params.max_new_tokens,
            pad_token_id=pad_token_id,
            streamer=streamer,
            stopping_criteria=stopping,
            **_sampling_kwargs(params),
        )
    # Encoder-decoder output starts with the decoder start token; decoder-only output with the prompt.
    prefix = 1 if loaded.is_encoder_decoder else prompt_tokens
    new_ids = output[0, prefix:].tolist()
    return tokenizer.decode(new_ids, skip_special_tokens=True), len(new_ids)


def answer_question(loaded: LoadedModel, question: str, context: str) -> QaAnswer:
    """Best answer span in the context: windows over long contexts, span of at most
    QA_MAX_ANSWER_TOKENS tokens, score = P(start) * P(end) within the window."""
    tokenizer = loaded.tokenizer
    max_length = min(
        int(tokenizer.model_max_length) if tokenizer.model_max_length < 1_000_000 else QA_DEFAULT_MAX_LENGTH,
        _context_limit(loaded.model) or QA_DEFAULT_MAX_LENGTH,
    )
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    if question_tokens > max_length // 2:
        message = f"the question is {question_tokens} tokens; at most {max_length // 2} fit beside the context"
        raise InvalidArgument(message, [FieldViolation("question", message)])
    stride = min(128, (max_length - question_tokens) // 4)
    encoded = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",
        return_tensors="pt",
    )
    offsets = encoded.pop("offset_mapping")
    encoded.pop("overflow_to_sample_mapping", None)
    with torch.inference_mode():
        output = loaded.model(**encoded.to(loaded.device))
    best: QaAnswer | None = None
    for window in range(offsets.shape[0]):
        in_context = torch.tensor([sid == 1 for sid in encoded.sequence_ids(window)], dtype=torch.bool)
        starts = output.start_logits[window].float().cpu().masked_fill(~in_context, float("-inf")).softmax(-1)
        ends = output.end_logits[window].float().cpu().masked_fill(~in_context, float("-inf")).softmax(-1)
        length = starts.shape[0]
        allowed = torch.ones(length, length, dtype=torch.bool).triu().logical_and(
            torch.ones(length, length, dtype=torch.bool).tril(QA_MAX_ANSWER_TOKENS - 1)
        )
        scores = (starts[:, None] * ends[None, :]).masked_fill(~allowed, 0.0)
        flat = int(scores.argmax())
        first, last = divmod(flat, length)
        start_char, end_char = int(offsets[window, first, 0]), int(offsets[window, last, 1])
        # Byte-level tokens carry their leading space; the answer is the text without it.
        while start_char < end_char and context[start_char].isspace():
            start_char += 1
        while end_char > start_char and context[end_char - 1].isspace():
            end_char -= 1
        candidate = QaAnswer(context[start_char:end_char], float(scores[first, last]), start_char, end_char,
                             last - first + 1)
        if best is None or candidate.score > best.score:
            best = candidate
    if best is None:
        raise InvalidArgument("the context is empty", [FieldViolation("context", "the context has no tokens")])
    return best
