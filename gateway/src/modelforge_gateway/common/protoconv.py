"""Protobuf scalars -> JSON values as this API writes them (ISO times, plain numbers, GiB)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

GIB = 1024**3
MIB = 1024**2


def iso_z(ts: timestamp_pb2.Timestamp, *, millis: bool = False) -> str | None:
    """ISO 8601 in UTC with a Z suffix; None for an unset timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    moment = ts.ToDatetime(tzinfo=dt.UTC)
    return moment.isoformat(timespec="milliseconds" if millis else "seconds").replace("+00:00", "Z")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gib(num_bytes: int | float, digits: int = 2) -> float:
    return round(num_bytes / GIB, digits)


def plain_numbers(value: Any) -> Any:
    """protobuf Struct stores every number as a double: give integral ones back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_numbers(v) for v in value]
    return value


def struct_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return dict(plain_numbers(json_format.MessageToDict(struct)))


def optional_float(message: Message, name: str) -> float | None:
    """An `optional` number field: None when unset (0.0 would read as a real value)."""
    return float(getattr(message, name)) if message.HasField(name) else None
