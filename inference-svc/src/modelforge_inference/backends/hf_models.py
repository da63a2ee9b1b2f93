"""transformers + peft work for the local backend: loading, generation and extractive QA.

This is the only module that imports torch at import time; the local backend imports it lazily,
so the service starts (and serves a TGI backend) without loading torch. Everything here blocks:
callers run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

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
from modelforge_inference import heap
from modelforge_inference.artifacts import estimate_weight_bytes, model_folder, verify_artifacts
from modelforge_inference.domain import EXTRACTIVE_QA, FINISH_LENGTH, FINISH_STOP, GenerationParams, ModelRef
from modelforge_inference.prompts import build_input
from modelforge_inference.stops import RequestOutput

log = logging.getLogger(__name__)
# Progress bars would write into the service's JSON log stream.
transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated

_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.txt")
QA_MAX_ANSWER_TOKENS = 30
QA_DEFAULT_MAX_LENGTH = 384


@dataclass
class BaseHost:
    """One loaded copy of a base model. LoRA adapters attach to it (peft's multiple adapters) and
    each request names its adapter, so requests of several adapters can share one forward pass."""

    model: Any
    tokenizer: Any
    device: str
    is_encoder_decoder: bool
    # Parameter bytes of the base alone (adapters are accounted to their models).
    nbytes: int
    # Held around every forward pass and every adapter change: a generation step and an adapter
    # load never overlap.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # A causal LM (its adapters may go through BatchedLora).
    causal: bool = False
    # peft adapter names attached now, and the one peft has active (None: unknown).
    adapters: set[str] = field(default_factory=set)
    active_adapter: str | None = None
    # Mixed-adapter batches in batched matmuls (lora_batch.py), when every adapter qualifies.
    batched_lora: Any = None

    @functools.cached_property
    def max_positions(self) -> int | None:
        """The model's context length (None: not stated); looked up once, not per request."""
        return context_limit(self.model)

    @property
    def has_peft(self) -> bool:
        return bool(self.adapters)

    def adapter_setup(self, adapter_names: list[str]) -> tuple[contextlib.AbstractContextManager[Any], dict[str, Any]]:
        """How to run a forward pass whose rows use these adapters (BASE_ADAPTER: the base alone), with
        the host's lock held: a context to enter and keyword arguments for the call.

        Rows of different adapters use peft's mixed-batch LoRA (`adapter_names=`, one per row); when
        every row uses the same adapter it is made the active one instead, and the base alone runs with
        the adapters disabled: peft's mixed-batch path splits every LoRA layer's input by adapter, which
        costs a lone request about a third of its speed on a small model."""
        if not self.has_peft:
            return contextlib.nullcontext(), {}
        if self.batched_lora is not None:
            return self.batched_lora.rows(adapter_names, BASE_ADAPTER), {}
        names = set(adapter_names)
        if len(names) > 1:
            return contextlib.nullcontext(), {"adapter_names": adapter_names}
        (name,) = names
        if name == BASE_ADAPTER:
            return self.model.disable_adapter(), {}
        if self.active_adapter != name:
            self.model.set_adapter(name)
            self.active_adapter = name
        return contextlib.nullcontext(), {}


# peft's name for "no adapter" in a mixed batch.
BASE_ADAPTER = "__base__"


@dataclass
class ServedModel:
    """A registered model as served: its base host, its adapter on it (None = the base itself)
    and its own tokenizer (a fine-tune may carry its own chat template)."""

    host: BaseHost
    adapter: str | None
    tokenizer: Any
    # Bytes this model adds to its base (the adapter's weights).
    nbytes: int
    # Requests running on it now; an evicted adapter is detached when the last one ends.
    active: int = 0
    retired: bool = False
    # The event loop encodes while the batch thread decodes: a fast tokenizer is not promised to be
    # safe to share between threads ("Already borrowed").
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def adapter_name(self) -> str:
        return self.adapter or BASE_ADAPTER

    @functools.cached_property
    def eos_ids(self) -> frozenset[int]:
        """Token ids that end a generation (looked up once: through peft's attribute forwarding
        it cost every request several microseconds on the event loop)."""
        return frozenset(eos_token_ids(self))

    @property
    def is_encoder_decoder(self) -> bool:
        return self.host.is_encoder_decoder


@dataclass(frozen=True)
class ModelPlan:
    """What serving a model needs, found before loading: which base host it shares, and sizes."""

    base_key: tuple[str, str, int]
    tokenizer: Any
    base_bytes: int
    own_bytes: int


@dataclass(frozen=True)
class TextGeneration:
    text: str
    tokens: int
    prompt_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class QaAnswer:
    text: str
    score: float
    start: int
    end: int
    tokens: int


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def serving_dtype(device: str) -> torch.dtype:
    """The dtype weights are served in on `device` (bf16 on a GPU that has it, else fp16; fp32 on CPU)."""
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
    width = torch.tensor([], dtype=serving_dtype(device)).element_size()
    total = estimate_weight_bytes(Path(_weights_source(ref)), width)
    if ref.adapter_type == "lora":
        total += estimate_weight_bytes(folder, None)
    return total


def _load_tokenizer(ref: ModelRef) -> Any:
    folder = Path(ref.path)
    source = str(folder) if _has_tokenizer(folder) else _weights_source(ref)
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=Path(source).is_dir())
    except OSError as exc:
        raise NotFound(f"tokenizer of {source!r} for model {ref.model_id!r} is not available: {exc}") from exc
    except ValueError as exc:
        raise FailedPrecondition(f"tokenizer of model {ref.model_id!r} cannot be loaded: {exc}") from exc


def plan_model(ref: ModelRef, device: str) -> ModelPlan:
    """Verifies the artifacts and reads the tokenizer. Models share a base host when they have the
    same base weights, the same kind of head and the same vocabulary size (training that added
    tokens resized the embeddings, which would change the base for everyone else)."""
    if ref.adapter_type not in ("lora", "full"):
        raise FailedPrecondition(f"model {ref.model_id!r} has unknown adapter_type {ref.adapter_type!r}")
    verify_artifacts(ref)
    source = _weights_source(ref)
    tokenizer = _load_tokenizer(ref)
    width = torch.tensor([], dtype=serving_dtype(device)).element_size()
    base_bytes = estimate_weight_bytes(Path(source), width)
    own_bytes = estimate_weight_bytes(model_folder(ref), None) if ref.adapter_type == "lora" else 0
    head = "qa" if ref.task == EXTRACTIVE_QA else "lm"
    return ModelPlan((str(Path(source).resolve()) if Path(source).is_dir() else source, head, len(tokenizer)),
                     tokenizer, base_bytes, own_bytes)


def load_base(ref: ModelRef, plan: ModelPlan, device: str) -> BaseHost:
    """Loads the base weights of `ref` (no adapter) onto `device`."""
    source = _weights_source(ref)
    local = Path(source).is_dir()
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local)
        model_class = _model_class(ref.task, config)
        device_map = {"": device} if device.startswith("cuda") else None
        model = model_class.from_pretrained(
            source, dtype=serving_dtype(device), local_files_only=local, device_map=device_map
        )
    except OSError as exc:
        raise NotFound(f"weights of {source!r} for model {ref.model_id!r} are not available: {exc}") from exc
    except ValueError as exc:
        raise FailedPrecondition(f"model {ref.model_id!r} cannot be loaded for task {ref.task!r}: {exc}") from exc
    if device_map is None:
        model.to(device)
    embeddings = model.get_input_embeddings()
    if embeddings is not None and plan.base_key[2] > embeddings.num_embeddings:
        model.resize_token_embeddings(plan.base_key[2])
    model.eval()
    host = BaseHost(
        model=model,
        tokenizer=plan.tokenizer,
        device=device,
        is_encoder_decoder=bool(getattr(config, "is_encoder_decoder", False)),
        nbytes=_parameter_bytes(model),
        causal=model_class is AutoModelForCausalLM,
    )
    log.info("loaded base %s (%s bytes) on %s", source, host.nbytes, device)
    return host


def adapter_name_for(ref: ModelRef) -> str:
    # peft keeps adapters in ModuleDicts: the name must be a plain identifier (no dots).
    digest = hashlib.sha256("\0".join(ref.cache_key).encode()).hexdigest()[:16]
    return f"mf_{digest}"


def attach_model(host: BaseHost, ref: ModelRef, plan: ModelPlan) -> ServedModel:
    """Serves `ref` from `host`: a LoRA adapter is loaded onto the shared base; a full model whose
    base is this host's weights is the base itself."""
    if ref.adapter_type != "lora":
        return ServedModel(host, None, plan.tokenizer, 0)
    from peft import PeftModel

    name = adapter_name_for(ref)
    with host.lock:
        before = _parameter_bytes(host.model)
        try:
            if not host.has_peft:
                host.model = PeftModel.from_pretrained(host.model, ref.path, adapter_name=name, is_trainable=False)
                host.active_adapter = name
            elif name not in host.adapters:
                host.model.load_adapter(ref.path, adapter_name=name, is_trainable=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise FailedPrecondition(f"LoRA adapter of model {ref.model_id!r} cannot be loaded: {exc}") from exc
        host.adapters.add(name)
        host.model.eval()
        _choose_lora_path(host)
        own = _parameter_bytes(host.model) - before
    log.info("attached adapter of %s (%s bytes) to its base", ref.model_id, own)
    return ServedModel(host, name, plan.tokenizer, own)


def detach_model(served: ServedModel) -> None:
    """Removes the model's adapter from its base (no-op for a base served as itself)."""
    host = served.host
    if served.adapter is None or served.adapter not in host.adapters:
        return
    with host.lock:
        host.adapters.discard(served.adapter)
        host.active_adapter = None
        if host.adapters:
            host.model.delete_adapter(served.adapter)
            _choose_lora_path(host)
        else:
            # The last adapter: take the LoRA layers out and keep the plain base.
            if host.batched_lora is not None:
                host.batched_lora.release()
                host.batched_lora = None
            host.model = host.model.unload()


def _choose_lora_path(host: BaseHost) -> None:
    """Batched matmuls for a causal LM whose adapters are all plain LoRA; peft's own path otherwise.
    Called with the host's lock held, after the adapters changed."""
    from modelforge_inference.backends import lora_batch

    names = sorted(host.adapters)
    if host.causal and names and lora_batch.supports(host.model, names):
        if host.batched_lora is None:
            host.batched_lora = lora_batch.BatchedLora(host.model)
        host.batched_lora.rebuild(names)
    elif host.batched_lora is not None:
        host.batched_lora.release()
        host.batched_lora = None
        host.active_adapter = None


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


def release_memory() -> None:
    """Returns memory of dropped models: collect cycles (frozen ones too: heap.py), then hand cached
    CUDA blocks back."""
    heap.collect_all()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _StopWhen(StoppingCriteria):
    """Stops generate() when the caller went away or a stop string was generated."""

    def __init__(self, cancel: threading.Event | None, output: RequestOutput) -> None:
        self._cancel = cancel
        self._output = output

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = self._output.stopped or (self._cancel is not None and self._cancel.is_set())
        # A dtype=bool tensor is what transformers' BoolTensor annotation means; torch types it as Tensor.
        flags = torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, flags)


class _OutputStreamer:
    """generate()'s streamer protocol feeding a RequestOutput (the prompt's put is skipped)."""

    def __init__(self, output: RequestOutput) -> None:
        self._output = output
        self._prompt_skipped = False

    def put(self, value: Any) -> None:
        if not self._prompt_skipped:
            self._prompt_skipped = True
            return
        self._output.push([int(token) for token in value.reshape(-1).tolist()])

    def end(self) -> None:
        pass


def context_limit(model: Any) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def token_ids(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    """`tokenizer(text)["input_ids"]`. A fast tokenizer's call comes down to its Rust backend's
    encode once it has set no padding, no truncation and its own special-token splitting on it;
    with those already so, the backend is called directly: the Python around it was half of the
    20 to 40 microseconds that every request spends tokenizing on the event loop."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (
        backend is not None
        and backend.truncation is None
        and backend.padding is None
        and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))
    ):
        return list(backend.encode(text, add_special_tokens=add_special_tokens).ids)
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def encode_request(served: ServedModel, task: str, params: GenerationParams) -> list[int]:
    """The prompt's token ids (chat template applied); refuses a prompt that with max_new_tokens
    does not fit the model's context."""
    tokenizer = served.tokenizer
    model_input = build_input(task, params, tokenizer, served.is_encoder_decoder)
    with served.tokenizer_lock:
        ids = token_ids(tokenizer, model_input.text, model_input.add_special_tokens)
    limit = None if served.is_encoder_decoder else served.host.max_positions
    if limit is not None and len(ids) + params.max_new_tokens > limit:
        field_name = ("messages" if params.messages else "prompt") if len(ids) >= limit else "max_new_tokens"
        message = (
            f"the prompt is {len(ids)} tokens; with max_new_tokens {params.max_new_tokens} it exceeds"
            f" the model's context of {limit} tokens"
        )
        raise InvalidArgument(message, [FieldViolation(field_name, message)])
    if not ids:
        raise InvalidArgument("the prompt has no tokens", [FieldViolation("prompt", "the prompt has no tokens")])
    return [int(i) for i in ids]


def decoder(served: ServedModel) -> Callable[[Sequence[int]], str]:
    """Token ids -> text without special tokens, safe to call beside encode_request."""
    tokenizer, lock = served.tokenizer, served.tokenizer_lock

    def decode(ids: Sequence[int]) -> str:
        with lock:
            return str(tokenizer.decode(list(ids), skip_special_tokens=True))

    return decode


def eos_token_ids(served: ServedModel) -> set[int]:
    ids: set[int] = set()
    configured = getattr(getattr(served.host.model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured]:
        if isinstance(value, int):
            ids.add(value)
    if served.tokenizer.eos_token_id is not None:
        ids.add(int(served.tokenizer.eos_token_id))
    return ids


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
    served: ServedModel,
    task: str,
    params: GenerationParams,
    emit: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    due: Callable[[], bool] | None = None,
) -> TextGeneration:
    """One request through generate() under the host's lock (encoder-decoder models, and decoder
    models whose cache the batcher cannot merge). Returns the new text (prompt excluded)."""
    host = served.host
    tokenizer = served.tokenizer
    input_ids = encode_request(served, task, params)
    output = RequestOutput(decoder(served), params.stop, emit, due)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = torch.tensor([input_ids], device=host.device)
    with host.lock, torch.inference_mode():
        if params.seed is not None:
            # generate() samples from the global generator; the host's lock keeps this run alone on it.
            torch.manual_seed(params.seed)
        adapter_context, adapter_kwargs = host.adapter_setup([served.adapter_name])
        with adapter_context:
            host.model.generate(
                input_ids=encoded,
                attention_mask=torch.ones_like(encoded),
                max_new_tokens=params.max_new_tokens,
                pad_token_id=pad_token_id,
                streamer=_OutputStreamer(output),
                stopping_criteria=StoppingCriteriaList([_StopWhen(cancel, output)]),
                **adapter_kwargs,
                **_sampling_kwargs(params),
            )
    stopped_by_string = output.stopped
    output.finish()
    ended_by_eos = bool(output.tokens) and output.tokens < params.max_new_tokens
    reason = FINISH_STOP if stopped_by_string or ended_by_eos else FINISH_LENGTH
    return TextGeneration(output.text, output.tokens, len(input_ids), reason)


def answer_question(served: ServedModel, question: str, context: str) -> QaAnswer:
    """Best answer span in the context: windows over long contexts, span of at most
    QA_MAX_ANSWER_TOKENS tokens, score = P(start) * P(end) within the window."""
    tokenizer = served.tokenizer
    host = served.host
    max_length = min(
        int(tokenizer.model_max_length) if tokenizer.model_max_length < 1_000_000 else QA_DEFAULT_MAX_LENGTH,
        context_limit(host.model) or QA_DEFAULT_MAX_LENGTH,
    )
    with served.tokenizer_lock:
        question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    if question_tokens > max_length // 2:
        message = f"the question is {question_tokens} tokens; at most {max_length // 2} fit beside the context"
        raise InvalidArgument(message, [FieldViolation("question", message)])
    stride = min(128, (max_length - question_tokens) // 4)
    with served.tokenizer_lock:
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
    adapters = [served.adapter_name] * int(encoded["input_ids"].shape[0])
    with host.lock, torch.inference_mode():
        adapter_context, adapter_kwargs = host.adapter_setup(adapters)
        with adapter_context:
            output = host.model(**encoded.to(host.device), **adapter_kwargs)
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
