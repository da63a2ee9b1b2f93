"""The one way a JSONL dataset is split into lines and each line parsed: upload (registry), the check
before a job is queued (trainer validation) and the training worker's loader all use it, so a file
that passes upload trains, and one that would not is refused at upload with its line number.

Lines:
  A file is split at ``\\n`` only. One ``\\r`` right before it is part of the line ending (CRLF
  files are fine); any other ``\\r`` is refused, because other tools (editors, ``str.splitlines``,
  universal-newline readers) would see a line break there. A UTF-8 byte order mark at the start of
  the file is ignored. Blank lines (spaces and tabs only) are skipped but keep their numbers.

A line must be:
  UTF-8 text without NUL bytes, at most `MAX_LINE_BYTES` long, one JSON object (RFC 8259: no NaN
  or Infinity), no deeper than `MAX_NESTING` levels, numbers at most `MAX_NUMBER_CHARS` characters
  and finite, and no string (key or value) holding an unpaired UTF-16 surrogate such as
  ``"\\ud800"`` (valid JSON, but not Unicode text: nothing downstream could store or tokenize it).

Use::

    for number, raw in split_lines(handle):          # binary handle, bytes or an iterable of lines
        row = parse_row(raw, number)                  # dict, or raises LineError(line, message)
    rows = read_rows(path)                            # every row; LineError at the first bad line
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_NESTING = 64
MAX_NUMBER_CHARS = 100
_BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 1024 * 1024


@runtime_checkable
class LineReader(Protocol):
    """What is read line by line: a binary file handle, or a wrapper offering its readline."""

    def readline(self, limit: int = -1, /) -> bytes: ...


# A whole file's bytes or text, a handle read line by line, or an iterable of lines.
LineSource: TypeAlias = bytes | str | LineReader | Iterable[bytes | str]


class LineError(ValueError):
    """A line that is not a usable row: `line` is 1-based, `field` the offending key path ("" for
    the line as a whole)."""

    def __init__(self, line: int, message: str, field: str = "") -> None:
        super().__init__(f"line {line}{', field ' + field if field else ''}: {message}")
        self.line = line
        self.field = field
        self.message = message


def _without_ending(raw: bytes) -> bytes:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
    return raw


def _too_long(number: int) -> bytes:
    # A marker the parser turns into an error for that line (the line itself is never held).
    return b"\x00too-long:" + str(number).encode()


def _split_handle(handle: LineReader) -> Iterator[tuple[int, bytes]]:
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            # Skip the rest of the over-long line without holding it.
            while True:
                rest = handle.readline(_SKIP_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, _too_long(number)
            continue
        yield number, _without_ending(raw)


def split_lines(source: LineSource) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, the line's bytes without its ending) for a whole file's bytes, a binary
    handle (read line by line, each capped at MAX_LINE_BYTES), or an iterable of lines as a binary
    handle yields them (a ``str`` is encoded as UTF-8, surrogates kept so the parser can name them).
    A byte order mark opening the file is dropped."""
    for number, raw in _split(source):
        yield number, raw[len(_BOM) :] if number == 1 and raw.startswith(_BOM) else raw


def _split(source: LineSource) -> Iterator[tuple[int, bytes]]:
    if isinstance(source, str):
        source = source.encode("utf-8", "surrogatepass")
    if isinstance(source, bytes):
        pieces = source.split(b"\n")
        for number, piece in enumerate(pieces, start=1):
            if number == len(pieces):
                if piece:  # the last line without a final "\n"
                    yield number, piece
                return
            yield number, piece[:-1] if piece.endswith(b"\r") else piece
        return
    if isinstance(source, LineReader):
        yield from _split_handle(source)
        return
    for number, item in enumerate(source, start=1):
        raw = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
        yield number, _without_ending(raw)


def is_blank(raw: bytes) -> bool:
    return not raw.strip(b" \t")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _NumberError(f"has a number of {len(text)} digits (at most {MAX_NUMBER_CHARS} characters)")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _NumberError(f"has a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NumberError(f"has a number out of range ({text[:20]})")
    return value


def _no_constant(name: str) -> Any:
    raise _NumberError(f"has {name}, which is not JSON (use null or a number)")


class _NumberError(ValueError):
    pass


def _first_surrogate(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"\\u{ord(text[exc.start]):04x}"
    return None


def _check_structure(value: Any, number: int) -> None:
    """Nesting depth and unpaired surrogates in every key and string, without recursion."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_NESTING:
            raise LineError(number, f"nests deeper than {MAX_NESTING} levels", path)
        if isinstance(item, dict):
            for key, child in item.items():
                where = f"{path}.{key}" if path else key
                bad = _first_surrogate(key)
                if bad is not None:
                    shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                    raise LineError(number, f"a key holds an unpaired surrogate {bad} (not Unicode text): {shown!r}")
                stack.append((child, depth + 1, where))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                stack.append((child, depth + 1, f"{path}[{index}]"))
        elif isinstance(item, str):
            bad = _first_surrogate(item)
            if bad is not None:
                raise LineError(number, f"holds an unpaired surrogate {bad} (not Unicode text)", path)


def parse_row(raw: bytes, number: int) -> dict[str, Any]:
    """The JSON object on line `number` (its bytes without the line ending); LineError otherwise."""
    if raw.startswith(b"\x00too-long:"):
        raise LineError(number, f"is longer than {MAX_LINE_BYTES} bytes")
    if number == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise LineError(number, f"contains a NUL byte at column {nul + 1}")
    carriage_return = raw.find(b"\r")
    if carriage_return >= 0:
        raise LineError(
            number,
            f"contains a carriage return (\\r) at column {carriage_return + 1}: lines end with \\n or \\r\\n",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"is not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        raise LineError(number, message) from None
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise LineError(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except _NumberError as exc:
        raise LineError(number, str(exc)) from None
    except RecursionError:
        raise LineError(number, f"nests deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:  # anything else the decoder refuses
        raise LineError(number, f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise LineError(number, f"must be a JSON object, got {type(value).__name__}")
    _check_structure(value, number)
    return value


def iter_rows(source: LineSource) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-blank line; raises LineError at the first bad one."""
    for number, raw in split_lines(source):
        if is_blank(raw):
            continue
        yield number, parse_row(raw, number)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a JSONL file; LineError (a ValueError) names the first bad line."""
    with open(path, "rb") as handle:
        return [row for _, row in iter_rows(handle)]
