"""Uploaded datasets under <data_dir>/datasets, all stored as JSONL.

An upload streams into a temporary file beside its destination, is converted to JSONL when it is
CSV, JSON or Parquet (modelforge_registry.tables), is validated, and only then is linked into
place under a name nothing else uses (data.jsonl, data-2.jsonl, ...) in the same transaction that
records its row. A column mapping (format field -> column) is stored in the row and beside the
file (<file>.columns.json, which every reader of modelforge_common.dataset_rows applies). An
invalid or oversized upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelforge_common.dataset_lines import LineError, iter_rows
from modelforge_common.dataset_rows import (
    DatasetReport,
    RowIssue,
    mapping_path,
    mapping_problems,
    read_mapping,
    source_path,
    validate_lines,
)
from modelforge_common.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from modelforge_registry.domain import TERMINAL_JOB_STATUSES, DatasetInfo
from modelforge_registry.files import DataDir, is_file, remove
from modelforge_registry.hub import HubSplit, fetch_split
from modelforge_registry.store import Database, DatasetRecord, as_utc, utc_now
from modelforge_registry.store.orm import JobRecord
from modelforge_registry.tables import TABLE_FORMATS, TableError, table_format, table_rows, write_jsonl

log = logging.getLogger(__name__)

DATASET_SUFFIX = ".jsonl"
MAX_FILENAME_LENGTH = 200
PART_PREFIX = ".upload-"
PART_SUFFIX = ".part"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_RENAMES = 10_000


_SUFFIXES = " or ".join(TABLE_FORMATS)


def upload_name(raw: str) -> tuple[str, str]:
    """(the name it is stored under, its format): the basename with only [A-Za-z0-9._-] (others
    become "_"), no leading dots, its .jsonl/.json/.csv/.parquet suffix replaced by .jsonl."""
    base = re.split(r"[\\/]", raw.strip())[-1]
    safe = _UNSAFE.sub("_", base).lstrip(".")
    if not safe:
        raise InvalidArgument("A dataset filename is required", [FieldViolation("file", "must not be empty")])
    fmt = table_format(safe)
    stem = safe[: -len(next(s for s, f in TABLE_FORMATS.items() if f == fmt))] if fmt else ""
    if fmt is None or not stem.strip("._-"):
        raise InvalidArgument(
            f"Dataset file {raw!r} must be a {_SUFFIXES.replace(' or ', ', ', 2)} file",
            [FieldViolation("file", f"must end in {_SUFFIXES.replace(' or ', ', ', 2)}")],
        )
    return stem[: MAX_FILENAME_LENGTH - len(DATASET_SUFFIX)] + DATASET_SUFFIX, fmt


def sanitize_filename(raw: str) -> str:
    """The name an upload is stored under (see `upload_name`)."""
    return upload_name(raw)[0]


def issue_field(issue: RowIssue, unit: str = "line") -> str:
    """"file" for the whole file, "file/line N" for a line, "file/line N/<field>" for a field
    (unit "row" for a CSV, JSON or Parquet upload, whose rows are not lines)."""
    if issue.line == 0:
        return "file"
    where = f"file/{unit} {issue.line}"
    return f"{where}/{issue.field}" if issue.field else where


def validation_error(report: DatasetReport, unit: str = "line") -> InvalidArgument:
    summary = report.summary() if unit == "line" else report.summary().replace("line ", f"{unit} ")
    return InvalidArgument(
        f"Dataset validation failed: {summary}",
        [FieldViolation(issue_field(issue, unit), issue.message) for issue in report.issues],
    )


def table_error(filename: str, exc: TableError) -> InvalidArgument:
    where = "file" if not exc.row else f"file/row {exc.row}"
    field_name = f"{where}/{exc.column}" if exc.column else where
    return InvalidArgument(f"Dataset validation failed: {filename}: {exc}", [FieldViolation(field_name, exc.message)])


def checked_mapping(mapping: Mapping[str, str] | None, field_name: str = "column_mapping") -> dict[str, str]:
    """A column mapping (format field -> column) as stored; InvalidArgument naming each bad entry."""
    if not mapping:
        return {}
    problems = mapping_problems(mapping)
    if problems:
        raise InvalidArgument(
            "Invalid column mapping: " + "; ".join(f"{name or 'mapping'} {message}" for name, message in problems),
            [FieldViolation(f"{field_name}/{name}" if name else field_name, message) for name, message in problems],
        )
    return dict(mapping)


def name_candidates(filename: str) -> Iterator[str]:
    """data.jsonl, data-2.jsonl, data-3.jsonl, ..."""
    yield filename
    stem = filename[: -len(DATASET_SUFFIX)]
    for number in range(2, _MAX_RENAMES):
        yield f"{stem}-{number}{DATASET_SUFFIX}"


class PartFile:
    """A temporary upload file that counts, hashes and caps what is written to it."""

    def __init__(self, directory: Path, limit_bytes: int) -> None:
        fd, path = tempfile.mkstemp(prefix=PART_PREFIX, suffix=PART_SUFFIX, dir=directory)
        self.path = Path(path)
        self.limit_bytes = limit_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        self._handle: BinaryIO | None = os.fdopen(fd, "wb")

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def write(self, chunk: bytes) -> None:
        assert self._handle is not None, "write after close"
        self.size += len(chunk)
        if self.size > self.limit_bytes:
            raise ResourceExhausted(f"Dataset exceeds the upload limit of {self.limit_bytes} bytes")
        self._handle.write(chunk)
        self._digest.update(chunk)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self.path.unlink(missing_ok=True)


DAMAGED_ROW = "the stored row is damaged (text that is not Unicode or missing values): delete it and upload again"


def _printable(text: str) -> str:
    """`text` with anything UTF-8 cannot hold (unpaired surrogates) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_storable(info: DatasetInfo) -> None:
    """Raises ValueError when the dataset's text could not travel in a reply (unpaired surrogates)."""
    for text in (info.filename, str(info.path), info.sha256, *info.fields, *info.formats):
        text.encode("utf-8")


def _fsync_directory(directory: Path) -> None:
    """Makes a new name in `directory` durable (the file's own bytes were fsynced before)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _datasets_named_by(request: object) -> set[str]:
    """The dataset names and paths a stored job request refers to."""
    if not isinstance(request, dict):
        return set()
    config = request.get("config")
    found = {request.get("dataset"), config.get("dataset_path") if isinstance(config, dict) else None}
    # A job's separate evaluation dataset (TrainingConfig.eval_dataset) is in use as much as its dataset.
    found |= {request.get("eval_dataset"), config.get("eval_dataset_path") if isinstance(config, dict) else None}
    return {value for value in found if isinstance(value, str) and value}


class _Digest(Protocol):
    """A hashlib hash, as far as the reader uses it."""

    def update(self, data: bytes, /) -> None: ...


class _HashingReader:
    """A binary handle's readline (what the shared line splitter reads, each line capped) that hashes
    every byte it hands out."""

    def __init__(self, handle: BinaryIO, digest: _Digest) -> None:
        self.handle = handle
        self.digest = digest

    def readline(self, limit: int = -1) -> bytes:
        line = self.handle.readline(limit)
        self.digest.update(line)
        return line


def _write_mapping(target: Path, mapping: Mapping[str, str] | None) -> None:
    """The mapping beside the dataset file (durably), or no file there at all."""
    path = mapping_path(target)
    if not mapping:
        path.unlink(missing_ok=True)
        return
    with path.open("w", encoding="utf-8") as handle:
        json.dump(dict(mapping), handle, ensure_ascii=False, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def _write_source(target: Path, source: Mapping[str, str] | None) -> None:
    """Where the rows came from, beside the file, for what was not uploaded as JSONL (the trainer
    copies it into the model's lineage)."""
    path = source_path(target)
    if not source or source.get("format") == "jsonl":
        path.unlink(missing_ok=True)
        return
    with path.open("w", encoding="utf-8") as handle:
        json.dump(dict(source), handle, ensure_ascii=False, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def _unlink_with_sidecars(target: Path) -> None:
    target.unlink(missing_ok=True)
    mapping_path(target).unlink(missing_ok=True)
    source_path(target).unlink(missing_ok=True)


def jsonl_rows(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Rows of JSONL files one after another (a Hub split in shards); TableError names the line."""
    for path in paths:
        with path.open("rb") as handle:
            try:
                for _, row in iter_rows(handle):
                    yield row
            except LineError as exc:
                raise TableError(exc.line, exc.field, f"{path.name} line {exc.line}: {exc.message}") from None


def hub_rows(split: HubSplit) -> Iterator[dict[str, Any]]:
    if split.fmt == "jsonl":
        yield from jsonl_rows(split.files)
        return
    for path in split.files:
        yield from table_rows(path, split.fmt)


def hub_settings(data_dir: DataDir) -> tuple[Path, str | None, bool]:
    """(cache folder, token, offline): MODELFORGE_HUB_CACHE (default <data dir>/hub), the server's
    read token (HF_TOKEN or HUGGING_FACE_HUB_TOKEN; MODELFORGE_HF_TOKEN is inference's push token)
    and huggingface_hub's own HF_HUB_OFFLINE."""
    cache = Path(os.environ.get("MODELFORGE_HUB_CACHE") or data_dir.root / "hub")
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return cache, token, offline


class _NameTaken(Exception):
    """A file of that name exists (rolls the row back)."""


def _claim(source: Path, target: Path) -> bool:
    """Puts source's content at target unless target exists (never overwrites); False when taken."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except OSError:
        # A filesystem without hard links: reserve the name exclusively, then replace it.
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        try:
            os.replace(source, target)
        except OSError:
            target.unlink(missing_ok=True)
            raise
        return True


class DatasetStore:
    def __init__(self, database: Database, data_dir: DataDir, max_upload_bytes: int) -> None:
        self.db = database
        self.data_dir = data_dir
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
                    if not _claim(part.path, target):
                        raise _NameTaken(candidate)
                    claimed = True
                    _write_mapping(target, mapping)
                    _write_source(target, source)
                    _fsync_directory(target.parent)
                    info = self._info(record)
                    _check_storable(info)
            except (IntegrityError, _NameTaken):
                if claimed:
                    _unlink_with_sidecars(target)
                continue
            except BaseException:
                # The row did not commit: the file it named must not stay.
                if claimed:
                    _unlink_with_sidecars(target)
                raise
            if candidate != name:
                log.info("dataset %s exists; stored the upload as %s", name, candidate)
            log.info("stored dataset %s (%d examples, %d bytes)", candidate, info.num_examples, info.size_bytes)
            return info
        raise Aborted(f"Could not find a free name for dataset {name}")

    # -- read ---------------------------------------------------------------------------------

    def list(self) -> list[DatasetInfo]:
        """Uploaded datasets, newest first. A damaged row (one an older version stored, or edited by
        hand) is listed flagged invalid with its text made printable, never failing the listing."""
        query = select(DatasetRecord).order_by(DatasetRecord.uploaded_at.desc(), DatasetRecord.id.desc())
        with self.db.transaction() as session:
            return [self._listable(record) for record in session.scalars(query)]

    def count(self) -> int:
        """Uploaded datasets (for the datasets gauge)."""
        with self.db.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(DatasetRecord)) or 0)

    def _listable(self, record: DatasetRecord) -> DatasetInfo:
        try:
            info = self._info(record)
            _check_storable(info)
            return info
        except Exception as exc:  # noqa: BLE001 - one bad row must not break the listing
            log.warning("dataset row %s is damaged: %s", _printable(str(record.filename)), _printable(str(exc)))
            return self._damaged(record)

    def _damaged(self, record: DatasetRecord) -> DatasetInfo:
        def number(value: object) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        fields = record.fields if isinstance(record.fields, list) else []
        formats = record.formats if isinstance(record.formats, list) else []
        try:
            path = self.data_dir.absolute(_printable(str(record.path)))
        except Exception:  # noqa: BLE001 - shown as the datasets folder when even the path is unusable
            path = self.data_dir.datasets
        return DatasetInfo(
            filename=_printable(str(record.filename)),
            path=path,
            size_bytes=number(record.size_bytes),
            num_examples=number(record.num_examples),
            sha256=_printable(str(record.sha256)),
            fields=tuple(_printable(str(name)) for name in fields),
            formats=tuple(_printable(str(name)) for name in formats),
            uploaded_at=as_utc(record.uploaded_at) if isinstance(record.uploaded_at, datetime) else None,
            valid=False,
            issues=(RowIssue(0, "", DAMAGED_ROW),),
        )

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
                _write_mapping(path, info.column_mapping)
                _write_source(path, info.source)
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

    def get(self, name: str) -> DatasetInfo:
        """An uploaded filename, or a path inside the data dir (relative to it or absolute). A file
        there that was not uploaded is validated and counted on the fly."""
        if not name.strip():
            raise InvalidArgument("A dataset name is required", [FieldViolation("dataset", "must not be empty")])
        if "\x00" in name:
            raise InvalidArgument(
                "Invalid dataset name", [FieldViolation("dataset", "must not contain NUL characters")]
            )
        bare = "/" not in name
        if bare:
            with self.db.transaction() as session:
                record = session.scalar(select(DatasetRecord).where(DatasetRecord.filename == name))
                if record is not None:
                    info = self._info(record)
                    if not is_file(info.path):
                        log.warning("dataset %s: its file %s is missing", name, info.path)
                        raise NotFound(f"Dataset {name} not found")
                    return info
        real = self.data_dir.inside(self.data_dir.datasets / name if bare else name)
        if real is None:
            raise InvalidArgument(
                f"Dataset path {name} is outside the data directory",
                [FieldViolation("dataset", "must be an uploaded filename or a path inside the data directory")],
            )
        if not is_file(real):
            raise NotFound(f"Dataset {name} not found")
        with self.db.transaction() as session:
            record = session.scalar(select(DatasetRecord).where(DatasetRecord.path == self.data_dir.relative(real)))
            if record is not None:
                return self._info(record)
        return self._inspect(real)

    def uploaded_path(self, name: str) -> Path:
        """The file of an uploaded dataset, by its exact filename (never a path: ReadDataset must not
        become a way to read other files of the data dir)."""
        with self.db.transaction() as session:
            record = session.scalar(select(DatasetRecord).where(DatasetRecord.filename == name))
            path = self.data_dir.absolute(record.path) if record is not None else None
        if path is None or not is_file(path):
            raise NotFound(f"Dataset {name} not found")
        return path

    def _inspect(self, path: Path) -> DatasetInfo:
        digest = hashlib.sha256()
        try:
            mapping = read_mapping(path)
        except ValueError:
            mapping = None
        with path.open("rb") as handle:
            report = validate_lines(_HashingReader(handle, digest), mapping=mapping)
        return DatasetInfo(
            filename=path.name,
            path=path,
            size_bytes=path.stat().st_size,
            num_examples=report.num_examples,
            sha256=digest.hexdigest(),
            fields=tuple(sorted(report.fields)),
            formats=tuple(sorted(report.formats)),
            uploaded_at=None,
            valid=report.valid,
            issues=tuple(report.issues),
            column_mapping=dict(mapping or {}),
        )

    # -- startup sweep ------------------------------------------------------------------------

    def recover(self, grace_s: float) -> None:
        """Removes temporary upload files left by a crash (older than grace_s: another replica
        may be receiving one right now)."""
        now = time.time()
        for part in self.data_dir.datasets.glob(f"{PART_PREFIX}*{PART_SUFFIX}"):
            try:
                if now - part.stat().st_mtime < grace_s:
                    continue
            except FileNotFoundError:
                continue
            log.warning("removing unfinished upload %s", part.name)
            part.unlink(missing_ok=True)

    def _info(self, record: DatasetRecord) -> DatasetInfo:
        return DatasetInfo(
            filename=record.filename,
            path=self.data_dir.absolute(record.path),
            size_bytes=record.size_bytes,
            num_examples=record.num_examples,
            sha256=record.sha256,
            fields=tuple(record.fields),
            formats=tuple(record.formats),
            uploaded_at=as_utc(record.uploaded_at),
            column_mapping={str(k): str(v) for k, v in (record.column_mapping or {}).items()},
            source={str(k): str(v) for k, v in (record.source or {}).items()},
        )
