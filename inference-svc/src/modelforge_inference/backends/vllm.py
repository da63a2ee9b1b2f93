"""Generation on a vLLM server's OpenAI-compatible API (MODELFORGE_VLLM_URL).

vLLM serves one base model with continuous batching and many LoRA adapters at once. A LoRA model
is loaded into it on first use through run-time LoRA loading (POST /v1/load_lora_adapter, which
needs the server started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), under its
model_id as the name, and then addressed by that name. The adapter folder is read by the vLLM
server itself: it must see the shared artifacts volume at the same path as inference-svc
(deploy/k8s/vllm mounts it so). A full (merged) model is addressed by the name vLLM serves it
under: its model_id, else its folder or base model as passed to `vllm serve`.

Chat messages go to /v1/chat/completions (vLLM applies the model's chat template); a prompt goes
to /v1/completions, formatted through the local tokenizer's chat template when the model's folder
is readable here (as the TGI backend does). Extractive QA stays on the local backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2

from modelforge_common.errors import FailedPrecondition, NotFound, Unavailable
from modelforge_inference.backends.remote import error_for_status
from modelforge_inference.backends.tgi import _prompt_format
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

log = logging.getLogger(__name__)

_ALREADY_LOADED = "already been loaded"


def finish_reason(reported: str | None) -> str:
    """vLLM's "stop" | "length" | "abort" ... in the API's terms."""
    return FINISH_LENGTH if reported == "length" else FINISH_STOP


def sampling_body(params: GenerationParams) -> dict[str, Any]:
    """OpenAI request fields plus vLLM's extra sampling parameters (top_k, repetition_penalty)."""
    body: dict[str, Any] = {"max_tokens": params.max_new_tokens, "temperature": params.temperature}
    if not params.greedy:
        body["top_p"] = params.top_p
        if params.top_k:
            body["top_k"] = params.top_k
    if params.repetition_penalty is not None:
        body["repetition_penalty"] = params.repetition_penalty
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    return body


class VllmBackend:
    name = "vllm"

    def __init__(self, url: str, timeout_s: float = 120.0, api_key: str | None = None) -> None:
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx2.AsyncClient(base_url=self._url, timeout=timeout_s, headers=headers)
        # LoRA names loaded into the server (by this process), and their adapter folders.
        self._loaded: dict[str, str] = {}
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._served_names: set[str] | None = None

    def serves(self, task: str) -> bool:
        return task in (TEXT_GENERATION, SUMMARIZATION)

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Transport failures as domain errors (the caller sees a status, never INTERNAL)."""
        try:
            yield
        except httpx2.TimeoutException as exc:
            raise Unavailable(f"vLLM server at {self._url} did not answer within {self._timeout_s:g}s") from exc
        except httpx2.TransportError as exc:
            raise Unavailable(f"vLLM server at {self._url} is unreachable: {exc}") from exc

    @staticmethod
    def _raise_for(status: int, text: str, what: str) -> None:
        detail = text.strip()[:500]
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            body = json.loads(text)
            error = body.get("error", body) if isinstance(body, dict) else body
            detail = str(error.get("message", error) if isinstance(error, dict) else error)[:500]
        raise error_for_status("vLLM", status, detail, what)

    async def _served(self) -> set[str]:
        if self._served_names is None:
            with self._mapped_errors():
                response = await self._client.get("/v1/models")
            if response.status_code != 200:
                self._raise_for(response.status_code, response.text, "model list")
            self._served_names = {str(m.get("id")) for m in response.json().get("data", [])}
        return self._served_names

    async def model_name(self, ref: ModelRef) -> str:
        """The name to put in "model": a LoRA adapter is loaded first (once)."""
        if ref.adapter_type == "lora":
            await self._load_adapter(ref)
            return ref.model_id
        served = await self._served()
        for candidate in (ref.model_id, ref.path, ref.base_model):
            if candidate and candidate in served:
                return candidate
        raise NotFound(
            f"the vLLM server does not serve model {ref.model_id!r} (it serves {sorted(served)}); start it with"
            f" --served-model-name {ref.model_id}"
        )

    async def _load_adapter(self, ref: ModelRef) -> None:
        if self._loaded.get(ref.model_id) == ref.path:
            return
        lock = self._load_locks.setdefault(ref.model_id, asyncio.Lock())
        async with lock:
            if self._loaded.get(ref.model_id) == ref.path:
                return
            if ref.model_id in self._loaded:
                # Re-registered with other files: the old adapter goes first.
                await self._unload_adapter(ref.model_id)
            body = {"lora_name": ref.model_id, "lora_path": ref.path}
            with self._mapped_errors():
                response = await self._client.post("/v1/load_lora_adapter", json=body)
            if response.status_code != 200 and _ALREADY_LOADED not in response.text:
                if response.status_code in (400, 404):
                    raise FailedPrecondition(
                        f"vLLM could not load the LoRA adapter of model {ref.model_id!r} from {ref.path}:"
                        f" {response.text.strip()[:500]}"
                    )
                self._raise_for(response.status_code, response.text, "adapter load")
            self._loaded[ref.model_id] = ref.path
            log.info("loaded LoRA adapter %s into vLLM from %s", ref.model_id, ref.path)

    async def _unload_adapter(self, name: str) -> bool:
        with self._mapped_errors():
            response = await self._client.post("/v1/unload_lora_adapter", json={"lora_name": name})
        self._loaded.pop(name, None)
        return response.status_code == 200

    async def _request(self, ref: ModelRef, params: GenerationParams) -> tuple[str, dict[str, Any]]:
        model = await self.model_name(ref)
        body = {"model": model, **sampling_body(params)}
        if params.messages:
            body["messages"] = [{"role": m.role, "content": m.content} for m in params.messages]
            return "/v1/chat/completions", body
        tokenizer, is_encoder_decoder = await asyncio.to_thread(_prompt_format, ref)
        model_input = build_input(ref.task, params, tokenizer, is_encoder_decoder)
        body["prompt"] = model_input.text
        if not model_input.add_special_tokens:
            # The chat template already placed BOS and friends in the text.
            body["add_special_tokens"] = False
        return "/v1/completions", body

    @staticmethod
    def _text_of(choice: dict[str, Any]) -> str:
        if "message" in choice:
            return str(choice["message"].get("content") or "")
        if "delta" in choice:
            return str(choice["delta"].get("content") or "")
        return str(choice.get("text") or "")

    async def generate(self, ref: ModelRef, params: GenerationParams) -> GenerationResult:
        route, body = await self._request(ref, params)
        started = time.perf_counter()
        with self._mapped_errors():
            response = await self._client.post(route, json=body)
        if response.status_code != 200:
            self._raise_for(response.status_code, response.text, "generation request")
        answer = response.json()
        choice = answer["choices"][0]
        usage = answer.get("usage") or {}
        return GenerationResult(
            self._text_of(choice),
            int(usage.get("completion_tokens", 0)),
            int((time.perf_counter() - started) * 1000),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            finish_reason=finish_reason(choice.get("finish_reason")),
        )

    async def generate_stream(self, ref: ModelRef, params: GenerationParams) -> AsyncIterator[StreamChunk]:
        route, body = await self._request(ref, params)
        body.update(stream=True, stream_options={"include_usage": True})
        started = time.perf_counter()
        tokens = prompt_tokens = 0
        reason: str | None = None
        with self._mapped_errors():
            async with self._client.stream("POST", route, json=body) as response:
                if response.status_code != 200:
                    self._raise_for(response.status_code, (await response.aread()).decode(errors="replace"),
                                    "generation request")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        error = event["error"]
                        message = error.get("message", error) if isinstance(error, dict) else error
                        raise Unavailable(f"vLLM failed while generating: {message}")
                    if usage := event.get("usage"):
                        tokens = int(usage.get("completion_tokens", tokens))
                        prompt_tokens = int(usage.get("prompt_tokens", prompt_tokens))
                    for choice in event.get("choices") or []:
                        if choice.get("finish_reason"):
                            reason = choice["finish_reason"]
                        if piece := self._text_of(choice):
                            yield StreamChunk(piece)
        yield StreamChunk("", finished=True, tokens_generated=tokens,
                          generation_time_ms=int((time.perf_counter() - started) * 1000),
                          prompt_tokens=prompt_tokens, finish_reason=finish_reason(reason))

    async def unload(self, model_id: str) -> bool:
        if model_id not in self._loaded:
            return False
        return await self._unload_adapter(model_id)

    async def close(self) -> None:
        await self._client.aclose()
