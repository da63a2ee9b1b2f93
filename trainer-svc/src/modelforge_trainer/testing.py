"""Test helpers: fakes of the services trainer-svc calls (for its tests and other packages' tests that run a
real trainer without registry-svc / hardware-svc). The runtime's own helpers are modelforge_training.testing."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2

from modelforge_common.errors import FailedPrecondition, NotFound
from modelforge_trainer.config import Hyperparameters
from modelforge_trainer.convert import record_changes, record_time
from modelforge_trainer.device import DeviceInfo
from modelforge_trainer.jobs import JobRegistry
from modelforge_trainer.ports import DatasetInfo, JobRecord, MemoryEstimate, MemoryQuery, ModelRecord
from modelforge_trainer.runner import JobPaths, JobRunner
from modelforge_trainer.service import DurableJobs, TrainerService
from modelforge_trainer.status_lookup import IN_PROGRESS


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


class MemoryJobStore:
    """JobStore in a dict, ordered and compare-and-set like registry-svc's (newest queued first,
    the later created first on a tie); list_calls counts the ListJobs a registry would answer."""

    def __init__(self) -> None:
        self.records: dict[str, JobRecord] = {}
        self.list_calls = 0

    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        for known in self.records.values():
            if record.idempotency_key and known.idempotency_key == record.idempotency_key:
                return known, False
        self.records[record.job_id] = record
        return record, True

    async def get_job(self, job_id: str) -> JobRecord:
        if job_id not in self.records:
            raise NotFound(job_id)
        return self.records[job_id]

    async def list_jobs(
        self, statuses: Collection[str], limit: int, offset: int, *, in_progress_first: bool = False
    ) -> tuple[list[JobRecord], int]:
        self.list_calls += 1
        found = [r for r in reversed(self.records.values()) if not statuses or r.status in statuses]
        oldest = datetime.min.replace(tzinfo=UTC)
        found.sort(key=lambda r: record_time(r, "queued_at") or oldest, reverse=True)  # stable: ties keep order
        if in_progress_first:
            found.sort(key=lambda r: r.status not in IN_PROGRESS)
        return found[offset : offset + limit if limit else None], len(found)

    async def update_job(
        self, job_id: str, changes: dict[str, Any], expected_statuses: Collection[str] = ()
    ) -> JobRecord:
        record = await self.get_job(job_id)
        if expected_statuses and record.status not in expected_statuses:
            raise FailedPrecondition(f"job {job_id} is {record.status}")
        # As registry-svc applies an UpdateJob: the named fields from a partial record (field mask).
        updated = JobRecord()
        updated.CopyFrom(record)
        mask = field_mask_pb2.FieldMask(paths=sorted(changes))
        mask.MergeMessage(record_changes(job_id, changes), updated, replace_message_field=True)
        self.records[job_id] = updated
        return updated


def service_with_fakes(
    paths: JobPaths,
    runner: JobRunner,
    datasets: dict[str, Path],
    *,
    jobs: JobRegistry | None = None,
    durable: DurableJobs | None = None,
) -> TrainerService:
    """The domain service over `runner`, with these dataset files (FakeDatasets), no memory estimator,
    default hyperparameters and no GPU."""
    return TrainerService(
        jobs=jobs or JobRegistry(),
        runner=runner,
        datasets=FakeDatasets(datasets),
        estimator=None,
        defaults=Hyperparameters(),
        device=DeviceInfo(),
        paths=paths,
        durable=durable,
    )
