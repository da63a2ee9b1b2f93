"""Test helpers: fakes of the services trainer-svc calls (for its tests and other packages' tests that run a
real trainer without registry-svc / hardware-svc). The runtime's own helpers are modelforge_training.testing."""

from __future__ import annotations

from pathlib import Path

from modelforge_common.errors import NotFound
from modelforge_trainer.ports import DatasetInfo, MemoryEstimate, MemoryQuery, ModelRecord


class FakeDatasets:
    """DatasetLookup over a dict of filename -> path."""

    def __init__(self, files: dict[str, Path] | None = None) -> None:
        self.files = dict(files or {})

    async def get_dataset(self, name: str) -> DatasetInfo:
        path = self.files.get(name)
        if path is None:
            raise NotFound(f"Dataset {name} not found")
        return DatasetInfo(filename=name, path=str(path))


class FakeEstimator:
    """MemoryEstimator answering a fixed estimate (or raising a fixed error)."""

    def __init__(self, estimate: MemoryEstimate | Exception) -> None:
        self.estimate = estimate
        self.queries: list[MemoryQuery] = []

    async def estimate_memory(self, query: MemoryQuery) -> MemoryEstimate:
        self.queries.append(query)
        if isinstance(self.estimate, Exception):
            raise self.estimate
        return self.estimate


class FakeRegistrar:
    """ModelRegistrar that records what it was given (or raises a fixed error)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.records: list[ModelRecord] = []
        self.error = error

    async def register_model(self, record: ModelRecord) -> str:
        if self.error is not None:
            raise self.error
        self.records.append(record)
        return f"model_{len(self.records)}"
