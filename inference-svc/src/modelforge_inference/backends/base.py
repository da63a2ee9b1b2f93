"""The contract every generation backend meets; the service picks one per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from modelforge_inference.domain import GenerationParams, GenerationResult, ModelRef, StreamChunk


class InferenceBackend(Protocol):
    name: str

    def serves(self, task: str) -> bool:
        """Whether this backend can run the task (a TGI server has no extractive QA)."""
        ...

    async def generate(self, ref: ModelRef, params: GenerationParams) -> GenerationResult:
        """Generates with validated params; loads the model first if needed."""
        ...

    def generate_stream(self, ref: ModelRef, params: GenerationParams) -> AsyncIterator[StreamChunk]:
        """Yields text pieces as they are produced, then one chunk with finished=True and the totals."""
        ...

    async def unload(self, model_id: str) -> bool:
        """Drops the model's loaded copies; True when one was loaded."""
        ...

    async def close(self) -> None:
        """Frees everything the backend holds."""
        ...
