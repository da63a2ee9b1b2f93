"""Uploaded datasets under <data_dir>/datasets, all stored as JSONL.

An upload streams into a temporary file beside its destination, is converted to JSONL when it is
CSV, JSON or Parquet (modelforge_registry.tables), is validated, and only then is linked into
place under a name nothing else uses (data.jsonl, data-2.jsonl, ...) in the same transaction that
records its row. A column mapping (format field -> column) is stored in the row and beside the
file (<file>.columns.json, which every reader of modelforge_common.dataset_rows applies). An
invalid or oversized upload leaves nothing behind.

This module is the write side (uploads, Hub splits, deletion, the startup sweep); reads are
DatasetReader (dataset_reads), names and errors dataset_checks, file handling dataset_files.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import re
from collections.abc import AsyncIterable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelforge_common.dataset_rows import mapping_path, source_path, validate_lines
from modelforge_common.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from modelforge_registry.dataset_checks import (
    DATASET_SUFFIX,
    checked_mapping,
    name_candidates,
    sanitize_filename,
    table_error,
    upload_name,
    validation_error,
)
from modelforge_registry.dataset_files import (
    PartFile,
    claim,
    fsync_directory,
    remove_stale_parts,
    unlink_with_sidecars,
    write_mapping,
    write_source,
)
from modelforge_registry.dataset_reads import DatasetReader, check_storable
from modelforge_registry.dataset_sources import hub_rows, hub_settings
from modelforge_registry.domain import TERMINAL_JOB_STATUSES, DatasetInfo
from modelforge_registry.files import DataDir, remove
from modelforge_registry.hub import fetch_split
from modelforge_registry.store import Database, DatasetRecord, utc_now
from modelforge_registry.store.orm import JobRecord
from modelforge_registry.tables import TableError, table_rows, write_jsonl

log = logging.getLogger(__name__)


def _datasets_named_by(request: object) -> set[str]:
    """The dataset names and paths a stored job request refers to."""
    if not isinstance(request, dict):
        return set()
    config = request.get("config")
    found = {request.get("dataset"), config.get("dataset_path") if isinstance(config, dict) else None}
    # A job's separate evaluation dataset (TrainingConfig.eval_dataset) is in use as much as its dataset.
    found |= {request.get("eval_dataset"), config.get("eval_dataset_path") if isinstance(config, dict) else None}
    return {value for value in found if isinstance(value, str) and value}


class _NameTaken(Exception):
    """A file of that name exists (rolls the row back)."""


class DatasetStore(DatasetReader):
    """Uploaded datasets: the reads (DatasetReader), uploads, Hub splits and deletion."""

    def __init__(self, database: Database, data_dir: DataDir, max_upload_bytes: int) -> None:
        super().__init__(database, data_dir)
        self.max_upload_bytes = max_upload_bytes

    # -- upload -------------------------------------------------------------------------------

    async def upload(
        self, filename: str, chunks: AsyncIterable[bytes], column_mapping: Mapping[str, str] | None = None
    ) -> DatasetInfo:
        """Streams chunks to a temporary file, converts (CSV, JSON, Parquet), validates and stores
        it; nothing stays on error."""
        name, fmt = upload_name(filename)
        mapping = checked_mapping(column_mapping)
        part = await asyncio.to_thread(PartFile, self.data_dir.datasets, self.max_upload_bytes)
        try:
            async for chunk in chunks:
                await asyncio.to_thread(part.write, chunk)
            await asyncio.to_thread(part.close)
            if fmt == "jsonl":
                return await asyncio.to_thread(self._store, part, name, mapping, {"format": "jsonl"})
            original = re.split(r"[\\/]", filename.strip())[-1]
            source = {"format": fmt, "original_filename": original, "original_sha256": part.sha256}
            return await asyncio.to_thread(
                self.store_rows, lambda: table_rows(part.path, fmt), original, name, mapping, source
            )
        finally:
            part.discard()

    def register_hub(
        self, repo_id: str, config: str, split: str, revision: str, column_mapping: Mapping[str, str] | None = None
    ) -> DatasetInfo:
        """Stores one split of a Hub dataset (fetched once into the Hub cache) as a JSONL dataset
        named <org>__<name>[-<config>]-<split>.jsonl; the revision and its commit sha are kept."""
        mapping = checked_mapping(column_mapping)
        cache, token, offline = hub_settings(self.data_dir)
        hub = fetch_split(repo_id.strip(), config.strip(), split.strip(), revision.strip(), cache, token, offline)
        stem = "-".join(part for part in (hub.repo_id.replace("/", "__"), hub.config, hub.split) if part)
        source = {
            "format": "hub",
            "hub_id": hub.repo_id,
            "hub_config": hub.config,
            "hub_split": hub.split,
            "hub_revision": hub.revision or "main",
            "hub_sha": hub.sha,
        }
        label = f"{hub.repo_id} split {hub.split}"
        return self.store_rows(lambda: hub_rows(hub), label, sanitize_filename(stem + DATASET_SUFFIX), mapping, source)

    def store_rows(
        self,
        rows: Callable[[], Iterator[dict[str, Any]]],
        label: str,
        name: str,
        mapping: Mapping[str, str],
        source: dict[str, str],
    ) -> DatasetInfo:
        """Stores rows (a callable giving an iterator of dicts, which may raise TableError) as a
        JSONL dataset named like `name`; `label` names the source in errors."""
        converted = PartFile(self.data_dir.datasets, max(self.max_upload_bytes, 1) * 8)
        try:
            try:
                write_jsonl(rows(), converted)
            except TableError as exc:
                raise table_error(label, exc) from None
            converted.close()
            return self._store(converted, name, mapping, source, unit="row")
        finally:
            converted.discard()

    def _store(
        self,
        part: PartFile,
        name: str,
        mapping: Mapping[str, str] | None = None,
        source: dict[str, str] | None = None,
        unit: str = "line",
    ) -> DatasetInfo:
        part.close()
        with part.path.open("rb") as handle:
            report = validate_lines(handle, mapping=mapping or None)
        if not report.valid:
            raise validation_error(report, unit)
        stem = name[: -len(DATASET_SUFFIX)]
        with self.db.transaction() as session:
            taken = set(session.scalars(
                select(DatasetRecord.filename).where(DatasetRecord.filename.startswith(stem, autoescape=True))
            ))
        for candidate in name_candidates(name):
            if candidate in taken:
                continue
            target = self.data_dir.datasets / candidate
            claimed = False
            try:
                with self.db.transaction() as session:
                    self.db.serialize(session, "datasets.store")
                    record = DatasetRecord(
                        filename=candidate,
                        path=self.data_dir.relative(target),
                        size_bytes=part.size,
                        num_examples=report.num_examples,
                        sha256=part.sha256,
                        fields=sorted(report.fields),
                        formats=sorted(report.formats),
                        uploaded_at=utc_now(),
                        column_mapping=dict(mapping) if mapping else None,
                        source=source,
                    )
                    session.add(record)
                    session.flush()
                    # Inside the transaction: the row commits only once the file is durably in place.
                    if not claim(part.path, target):
                        raise _NameTaken(candidate)
                    claimed = True
                    write_mapping(target, mapping)
                    write_source(target, source)
                    fsync_directory(target.parent)
                    info = self._info(record)
                    check_storable(info)
            except (IntegrityError, _NameTaken):
                if claimed:
                    unlink_with_sidecars(target)
                continue
            except BaseException:
                # The row did not commit: the file it named must not stay.
                if claimed:
                    unlink_with_sidecars(target)
                raise
            if candidate != name:
                log.info("dataset %s exists; stored the upload as %s", name, candidate)
            log.info("stored dataset %s (%d examples, %d bytes)", candidate, info.num_examples, info.size_bytes)
            return info
        raise Aborted(f"Could not find a free name for dataset {name}")

    # -- delete -------------------------------------------------------------------------------

    def delete(self, name: str) -> DatasetInfo:
        """Removes an uploaded dataset, by its exact filename: the row, then its file (moved to the
        trash in one rename inside the transaction, put back if the row cannot be deleted).
        FailedPrecondition while a job that has not finished uses it."""
        if not name.strip() or "\x00" in name:
            raise InvalidArgument("A dataset name is required", [FieldViolation("name", "must be a dataset filename")])
        trashed: Path | None = None
        path: Path | None = None
        try:
            with self.db.transaction() as session:
                self.db.serialize(session, "datasets.store")
                record = session.scalar(select(DatasetRecord).where(DatasetRecord.filename == name))
                if record is None:
                    raise NotFound(f"Dataset {name} not found")
                users = self._unfinished_jobs_using(session, record)
                if users:
                    raise FailedPrecondition(
                        f"Dataset {name} is used by unfinished job(s) {', '.join(users)}: "
                        "delete it once they have finished or been stopped",
                        [FieldViolation("name", "is used by a queued or running job")],
                    )
                info = self._listable(record)
                path = self.data_dir.inside(self.data_dir.absolute(str(record.path)))
                session.delete(record)
                session.flush()
                if path is not None and path.is_relative_to(self.data_dir.datasets):
                    trashed = self.data_dir.move_to_trash(path, f"dataset-{name}")
                    mapping_path(path).unlink(missing_ok=True)
                    source_path(path).unlink(missing_ok=True)
        except BaseException:
            if trashed is not None and path is not None:
                os.replace(trashed, path)  # the row stays: so does its file
                write_mapping(path, info.column_mapping)
                write_source(path, info.source)
            raise
        if trashed is not None:
            remove(trashed)
        log.info("deleted dataset %s", name)
        return info

    # builtins.list: inside this class, a bare `list` names the list() method.
    def _unfinished_jobs_using(self, session: Session, record: DatasetRecord) -> builtins.list[str]:
        absolute = str(self.data_dir.absolute(str(record.path)))
        names = {record.filename, str(record.path), absolute}
        unfinished = session.scalars(select(JobRecord).where(JobRecord.status.not_in(TERMINAL_JOB_STATUSES)))
        return sorted(job.job_id for job in unfinished if _datasets_named_by(job.request) & names)

    # -- startup sweep ------------------------------------------------------------------------

    def recover(self, grace_s: float) -> None:
        """Removes temporary upload files left by a crash (older than grace_s: another replica
        may be receiving one right now)."""
        remove_stale_parts(self.data_dir.datasets, grace_s)
