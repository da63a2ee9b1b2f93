"""Generation on a remote text-generation-inference server (MODELFORGE_TGI_URL), through
huggingface_hub's AsyncInferenceClient against TGI's /generate and /generate_stream routes.

TGI serves one base model; a LoRA model is asked for with `adapter_id` = its model_id, so launch
TGI with `LORA_ADAPTERS=<model_id>=<adapter folder>,...`. TGI has no extractive QA: the service
keeps that task on the local backend. When the model's folder is readable here, its tokenizer's
chat template formats the prompt as in training (TGI's /generate takes text as is).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import (
    HfHubHTTPError,
    InferenceTimeoutError,
    OverloadedError,
    TextGenerationError,
    ValidationError,
)

from modelforge_common.errors import InvalidArgument, ResourceExhausted, Unavailable
from modelforge_inference.backends.remote import error_for_status
from modelforge_inference.domain import (
    FINISH_LENGTH,
    FINISH_STOP,
    SUMMARIZATION,
    TEXT_GENERATION,
    GenerationParams,
    GenerationResult,
    ModelRef,
    StreamChunk,
)
from modelforge_inference.prompts import build_input
from modelforge_inference.stops import StopFilter

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


@functools.lru_cache(maxsize=16)
def _local_tokenizer(folder: str) -> Any | None:
    """The tokenizer saved in `folder`, or None when there is none to read here."""
    path = Path(folder)
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        log.warning("cannot read the tokenizer in %s; sending the raw prompt: %s", folder, exc)
        return None


def _is_encoder_decoder(folder: str) -> bool:
    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    with contextlib.suppress(OSError, ValueError):
        return bool(json.loads(config.read_text()).get("is_encoder_decoder", False))
    return False


def _prompt_format(ref: ModelRef) -> tuple[Any | None, bool]:
    """The model's tokenizer (adapter folder first, then base) and whether it is encoder-decoder."""
    tokenizer = _local_tokenizer(ref.path) if ref.path else None
    if tokenizer is None and ref.base_model:
        tokenizer = _local_tokenizer(ref.base_model)
    weights = ref.base_model if ref.adapter_type == "lora" else ref.path
    return tokenizer, _is_encoder_decoder(weights)


def tgi_parameters(ref: ModelRef, params: GenerationParams) -> dict[str, Any]:
    """text_generation() keyword arguments. TGI refuses temperature 0, top_p 1 and top_k 0, so
    greedy decoding is do_sample=False and neutral values are left out."""
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "details": True, "return_full_text": False}
    if params.greedy:
        kwargs["do_sample"] = False
    else:
        kwargs["do_sample"] = True
        kwargs["temperature"] = params.temperature
        if params.top_p < 1.0:
            kwargs["top_p"] = params.top_p
        if params.top_k:
            kwargs["top_k"] = params.top_k
    if params.repetition_penalty is not None:
        kwargs["repetition_penalty"] = params.repetition_penalty
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if ref.adapter_type == "lora":
        kwargs["adapter_id"] = ref.model_id
    return kwargs


def finish_reason(reported: str | None) -> str:
    """TGI's "length" | "eos_token" | "stop_sequence" in the API's terms."""
    return FINISH_LENGTH if reported == "length" else FINISH_STOP


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    # TGI includes the matched stop sequence at the end of the text; the API leaves it out.
    found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    return text[: min(found)] if found else text


class TgiBackend:
    name = "tgi"

    def __init__(self, url: str, timeout_s: float = 120.0, token: str | None = None) -> None:
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._token = token

    def serves(self, task: str) -> bool:
        return task in (TEXT_GENERATION, SUMMARIZATION)

    def _client(self, route: str) -> AsyncInferenceClient:
        return AsyncInferenceClient(model=f"{self._url}/{route}", token=self._token, timeout=self._timeout_s)

    async def _prompt(self, ref: ModelRef, params: GenerationParams) -> tuple[str, int]:
        """The text to send and its token count (0 when no tokenizer is readable here)."""
        tokenizer, is_encoder_decoder = await asyncio.to_thread(_prompt_format, ref)
        model_input = build_input(ref.task, params, tokenizer, is_encoder_decoder)
        if tokenizer is None:
            return model_input.text, 0
        ids = tokenizer(model_input.text, add_special_tokens=model_input.add_special_tokens)["input_ids"]
        return model_input.text, len(ids)

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """TGI and transport failures as domain errors (the caller sees a status, never INTERNAL)."""
        try:
            yield
        except ValidationError as exc:
            raise InvalidArgument(f"TGI rejected the request: {exc}") from exc
        except OverloadedError as exc:
            raise ResourceExhausted(f"TGI server is overloaded: {exc}") from exc
        except TextGenerationError as exc:
            raise Unavailable(f"TGI failed to generate: {exc}") from exc
        except InferenceTimeoutError as exc:
            raise Unavailable(f"TGI server at {self._url} did not answer within {self._timeout_s:g}s") from exc
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            raise error_for_status("TGI", status, str(exc)) from exc
        except httpx2.TransportError as exc:
            raise Unavailable(f"TGI server at {self._url} is unreachable: {exc}") from exc

    async def generate(self, ref: ModelRef, params: GenerationParams) -> GenerationResult:
        prompt, prompt_tokens = await self._prompt(ref, params)
        started = time.perf_counter()
        with self._mapped_errors():
            async with self._client("generate") as client:
                output = await client.text_generation(prompt, stream=False, **tgi_parameters(ref, params))
        details = output.details
        tokens = details.generated_tokens if details is not None else 0
        reason = finish_reason(details.finish_reason if details is not None else None)
        text = _cut_at_stop(output.generated_text, params.stop)
        return GenerationResult(text, int(tokens), int((time.perf_counter() - started) * 1000),
                                prompt_tokens=prompt_tokens, finish_reason=reason)

    async def generate_stream(self, ref: ModelRef, params: GenerationParams) -> AsyncIterator[StreamChunk]:
        prompt, prompt_tokens = await self._prompt(ref, params)
        started = time.perf_counter()
        tokens = 0
        reported: int | None = None
        reason = FINISH_STOP
        # TGI returns the stop string as the last token's text; it is held back and dropped.
        stop_filter = StopFilter(params.stop)
        with self._mapped_errors():
            async with self._client("generate_stream") as client:
                stream = await client.text_generation(prompt, stream=True, **tgi_parameters(ref, params))
                async for chunk in stream:
                    tokens += 1
                    if chunk.details is not None:
                        reported = chunk.details.generated_tokens
                        reason = finish_reason(chunk.details.finish_reason)
                    if chunk.token.special or not chunk.token.text:
                        continue
                    piece = stop_filter.push(chunk.token.text)
                    if piece:
                        yield StreamChunk(piece)
        rest = stop_filter.flush()
        if rest:
            yield StreamChunk(rest)
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        yield StreamChunk("", finished=True, tokens_generated=int(reported or tokens), generation_time_ms=elapsed_ms,
                          prompt_tokens=prompt_tokens, finish_reason=reason)

    async def unload(self, model_id: str) -> bool:
        # The TGI server owns its weights; nothing is loaded here.
        return False

    async def close(self) -> None:
        _local_tokenizer.cache_clear()
