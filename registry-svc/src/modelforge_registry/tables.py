"""CSV, JSON and Parquet datasets turned into the JSONL rows every other part of ModelForge reads.

The registry stores every dataset as JSONL: an upload in another format is converted row by row
here, then checked by the shared line rules (modelforge_common.dataset_rows) like any JSONL file,
so the trainer never needs a second reader. A problem names the row (1-based, the CSV header not
counted) and column; nothing is stored then.

- CSV: UTF-8 (a byte order mark is fine), a header row of distinct non-empty names, every row as
  many values as the header; values are strings.
- JSON: one array of objects.
- Parquet: any Parquet file; values must be JSON values (text, numbers, booleans, null, lists and
  structs of them; timestamps become ISO 8601 text); NaN and binary columns are refused.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from modelforge_common.dataset_lines import MAX_LINE_BYTES

TABLE_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_PARQUET_MAGIC = b"PAR1"
# A CSV cell may be as long as a JSONL line may be (the csv module's default is 128 KiB).
csv.field_size_limit(MAX_LINE_BYTES)
_PARQUET_BATCH_ROWS = 1024


class TableError(ValueError):
    """A row (0 for the file as a whole) and column (may be empty) that cannot become a JSONL row."""

    def __init__(self, row: int, column: str, message: str) -> None:
        where = f"row {row}" if row else "file"
        super().__init__(f"{where}{', column ' + column if column else ''}: {message}")
        self.row = row
        self.column = column
        self.message = message


def table_format(filename: str) -> str | None:
    """jsonl, json, csv or parquet by the filename's suffix; None for anything else."""
    lowered = filename.lower()
    for suffix, name in TABLE_FORMATS.items():
        if lowered.endswith(suffix):
            return name
    return None


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            try:
                header = next(reader, None)
            except csv.Error as exc:
                raise TableError(0, "", f"the header line is not valid CSV ({exc})") from None
            if not header or not any(name.strip() for name in header):
                raise TableError(0, "", "the file is empty: a CSV dataset starts with a header row of column names")
            seen: set[str] = set()
            for index, name in enumerate(header, start=1):
                if not name.strip():
                    raise TableError(0, f"#{index}", "the header names no column here (every column needs a name)")
                if name in seen:
                    raise TableError(0, name, "appears twice in the header")
                seen.add(name)
            row_number = 0
            while True:
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise TableError(row_number + 1, "", f"is not valid CSV (line {reader.line_num}: {exc})") from None
                if not values:
                    continue  # a blank line
                row_number += 1
                if len(values) != len(header):
                    column = header[len(values)] if len(values) < len(header) else f"#{len(values)}"
                    raise TableError(
                        row_number,
                        column,
                        f"has {len(values)} values but the header has {len(header)} columns (line {reader.line_num})",
                    )
                yield dict(zip(header, values, strict=True))
    except UnicodeDecodeError as exc:
        raise TableError(0, "", f"is not UTF-8 text (invalid byte 0x{exc.object[exc.start]:02x})") from None


def _json_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(0, "", f"is not UTF-8 text (invalid byte 0x{exc.object[exc.start]:02x})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise TableError(0, "", f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise TableError(0, "", "nests too deeply") from None
    except ValueError as exc:
        raise TableError(0, "", f"is not valid JSON ({exc})") from None
    if not isinstance(value, list):
        raise TableError(
            0, "", f"must be a JSON array of row objects, got {type(value).__name__} (one object per line is .jsonl)"
        )
    for number, row in enumerate(value, start=1):
        if not isinstance(row, dict):
            raise TableError(number, "", f"must be a JSON object, got {type(row).__name__}")
        yield row


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (use null or a number)")


def _jsonable(value: Any, row: int, column: str) -> Any:
    """A Parquet cell as a JSON value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TableError(row, column, f"holds {value}, which is not JSON (use null or a number)")
        return value
    if isinstance(value, decimal.Decimal):
        return _jsonable(float(value), row, column)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(key): _jsonable(item, row, f"{column}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        # A Parquet map arrives as a list of (key, value) pairs: kept as a list of pairs.
        return [_jsonable(item, row, f"{column}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, bytes | bytearray):
        raise TableError(row, column, "holds binary data, which a text dataset cannot use")
    raise TableError(row, column, f"holds a {type(value).__name__}, which is not a JSON value")


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with path.open("rb") as handle:
        head = handle.read(4)
        size = handle.seek(0, 2)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if size < 8 or head != _PARQUET_MAGIC or tail != _PARQUET_MAGIC:
        raise TableError(0, "", "is not a Parquet file (it does not start and end with the PAR1 marker)")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise TableError(0, "", f"is not a readable Parquet file ({exc})") from None
    number = 0
    try:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for record in batch.to_pylist():
                number += 1
                yield {str(name): _jsonable(value, number, str(name)) for name, value in record.items()}
    except pa.ArrowException as exc:
        raise TableError(number + 1, "", f"cannot be read from the Parquet file ({exc})") from None


def table_rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """The rows of a CSV, JSON or Parquet file; TableError at the first that cannot be one."""
    readers = {"csv": _csv_rows, "json": _json_rows, "parquet": _parquet_rows}
    return readers[fmt](path)


class _Writable(Protocol):
    def write(self, chunk: bytes, /) -> object: ...


def write_jsonl(rows: Iterator[dict[str, Any]], target: _Writable | BinaryIO) -> int:
    """Writes one JSON object per line (text kept as is; an unpaired surrogate is written through so
    the line rules can name its row). Returns the row count."""
    count = 0
    for row in rows:
        line = json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        target.write(line.encode("utf-8", "surrogatepass") + b"\n")
        count += 1
    return count
