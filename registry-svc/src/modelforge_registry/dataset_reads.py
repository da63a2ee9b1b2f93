"""Reading uploaded datasets: listing (a damaged row flagged, never failing the listing), counting,
looking one up by filename or by a path inside the data dir (a file there that was not uploaded is
validated on the fly), and the file ReadDataset may stream.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from modelforge_common.dataset_rows import RowIssue, read_mapping, validate_lines
from modelforge_common.errors import FieldViolation, InvalidArgument, NotFound
from modelforge_registry.dataset_files import HashingReader
from modelforge_registry.domain import DatasetInfo
from modelforge_registry.files import DataDir, is_file
from modelforge_registry.store import Database, DatasetRecord, as_utc

log = logging.getLogger(__name__)

DAMAGED_ROW = "the stored row is damaged (text that is not Unicode or missing values): delete it and upload again"


def _printable(text: str) -> str:
    """`text` with anything UTF-8 cannot hold (unpaired surrogates) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_storable(info: DatasetInfo) -> None:
    """Raises ValueError when the dataset's text could not travel in a reply (unpaired surrogates)."""
    for text in (info.filename, str(info.path), info.sha256, *info.fields, *info.formats):
        text.encode("utf-8")


class DatasetReader:
    """The read side of DatasetStore (which adds uploads and deletion)."""

    def __init__(self, database: Database, data_dir: DataDir) -> None:
        self.db = database
        self.data_dir = data_dir

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
            check_storable(info)
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
            report = validate_lines(HashingReader(handle, digest), mapping=mapping)
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
