"""The inference service's domain API: validates a request once, then hands it to the backend
that serves its task (TGI when configured and able, else the local transformers backend)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_inference.backends.base import InferenceBackend
from modelforge_inference.domain import (
    ADAPTER_TYPES,
    GenerationResult,
    ModelRef,
    RequestedParams,
    StreamChunk,
)
from modelforge_inference.validation import validate_params


def _check_ref(ref: ModelRef) -> None:
    violations = []
    if not ref.model_id:
        violations.append(FieldViolation("model_id", "model_id is required"))
    if not ref.path:
        violations.append(FieldViolation("path", "the model's folder is required"))
    if ref.adapter_type not in ADAPTER_TYPES:
        violations.append(FieldViolation("adapter_type", f"must be one of {list(ADAPTER_TYPES)}"))
    if violations:
        raise InvalidArgument("incomplete model reference", violations)


class InferenceService:
    def __init__(
        self,
        local: InferenceBackend,
        remote: InferenceBackend | None = None,
        default_max_new_tokens: int = 256,
    ) -> None:
        self.local = local
        self.remote = remote
        self.default_max_new_tokens = default_max_new_tokens

    def backend_for(self, task: str) -> InferenceBackend:
        if self.remote is not None and self.remote.serves(task):
            return self.remote
        return self.local

    async def generate(self, ref: ModelRef, requested: RequestedParams) -> GenerationResult:
        params = validate_params(ref.task, requested, self.default_max_new_tokens)
        _check_ref(ref)
        return await self.backend_for(ref.task).generate(ref, params)

    async def generate_stream(self, ref: ModelRef, requested: RequestedParams) -> AsyncGenerator[StreamChunk, None]:
        params = validate_params(ref.task, requested, self.default_max_new_tokens)
        _check_ref(ref)
        async for chunk in self.backend_for(ref.task).generate_stream(ref, params):
            yield chunk

    async def unload(self, model_id: str) -> bool:
        if not model_id:
            raise InvalidArgument("model_id is required", [FieldViolation("model_id", "model_id is required")])
        unloaded = await self.local.unload(model_id)
        if self.remote is not None:
            unloaded = await self.remote.unload(model_id) or unloaded
        return unloaded

    async def close(self) -> None:
        await self.local.close()
        if self.remote is not None:
            await self.remote.close()
