"""One line splitter and one line parser: every hostile line is refused with its number, and what
upload accepts is exactly what the trainer's loader reads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from modelforge_common import dataset_lines
from modelforge_common.dataset_lines import LineError, iter_rows, parse_row, read_rows, split_lines
from modelforge_common.dataset_rows import load_rows, validate_lines

PAIR = b'{"prompt": "p", "completion": "c"}'


def file_with(bad_line: bytes, good_rows: int = 12) -> bytes:
    """A valid dataset with `bad_line` as line 3."""
    lines = [PAIR] * good_rows
    lines.insert(2, bad_line)
    return b"\n".join(lines) + b"\n"


HOSTILE = [
    pytest.param(b'{"\\udc80k": "v", "prompt": "p", "completion": "c"}', "unpaired surrogate \\udc80",
                 id="surrogate-key"),
    pytest.param(b'{"prompt": "\\ud800", "completion": "c"}', "unpaired surrogate \\ud800", id="surrogate-value"),
    pytest.param(b'{"prompt": "p", "completion": "c", "n": ' + b"7" * 5000 + b"}", "5000 digits", id="huge-int"),
    pytest.param(b'{"prompt": "p", "completion": "c", "n": 1.' + b"5" * 300 + b"}", "characters", id="long-float"),
    pytest.param(b'{"prompt": "p", "completion": "c", "n": 1e999}', "out of range", id="infinite-float"),
    pytest.param(b'{"prompt": "p", "completion": "c", "n": NaN}', "NaN, which is not JSON", id="nan"),
    pytest.param(b'{"prompt": "p", "completion": "c", "n": -Infinity}', "-Infinity", id="infinity"),
    pytest.param(b"[" * 200_000, "nests deeper than 64 levels", id="deep-arrays"),
    pytest.param(b'{"prompt": "p", "completion": "c", "x": ' + b"[" * 100 + b"]" * 100 + b"}", "nests deeper",
                 id="deep-but-decodable"),
    pytest.param(b'{"prompt":\r"p", "completion": "c"}', "carriage return (\\r) at column 11", id="stray-cr"),
    pytest.param(b'{"prompt": "p\xff", "completion": "c"}', "is not UTF-8 text (invalid byte 0xff at column 14)",
                 id="invalid-utf8"),
    pytest.param(b'{"prompt": "p", "completion": "c"}\x00', "NUL byte at column 35", id="nul"),
    pytest.param(b'{"prompt": "p", "completion": "c"', "not valid JSON", id="truncated"),
    pytest.param(b'["prompt"]', "must be a JSON object, got list", id="not-an-object"),
]


@pytest.mark.parametrize(("bad_line", "fragment"), HOSTILE)
def test_hostile_lines_are_refused_with_their_line_number(bad_line: bytes, fragment: str) -> None:
    data = file_with(bad_line)
    report = validate_lines(io.BytesIO(data))
    assert not report.valid
    assert [issue.line for issue in report.issues] == [3]
    assert fragment in report.issues[0].message
    with pytest.raises(LineError) as raised:
        list(iter_rows(data))
    assert raised.value.line == 3 and fragment in raised.value.message


def test_the_field_holding_a_bad_string_is_named() -> None:
    with pytest.raises(LineError) as raised:
        parse_row(b'{"messages": [{"role": "user", "content": "ok \\udfff"}]}', 4)
    assert (raised.value.line, raised.value.field) == (4, "messages[0].content")
    expected = "line 4, field messages[0].content: holds an unpaired surrogate \\udfff (not Unicode text)"
    assert str(raised.value) == expected


def test_line_endings_crlf_bom_and_blank_lines() -> None:
    data = b"\xef\xbb\xbf" + PAIR + b"\r\n\r\n  \t\n" + PAIR + b"\n" + PAIR
    assert [(number, row["prompt"]) for number, row in iter_rows(data)] == [(1, "p"), (4, "p"), (5, "p")]
    # The same lines arrive alike as bytes, a handle and an iterable of lines.
    as_bytes = list(split_lines(data))
    assert list(split_lines(io.BytesIO(data))) == as_bytes
    assert list(split_lines(io.BytesIO(data).readlines())) == as_bytes
    assert as_bytes[0][1].endswith(b"}") and as_bytes[1] == (2, b"")


def test_a_byte_order_mark_before_a_blank_first_line_is_no_row() -> None:
    data = b"\xef\xbb\xbf\n" + (PAIR + b"\n") * 10
    report = validate_lines(io.BytesIO(data))
    assert report.valid and report.num_examples == 10


def test_unicode_line_separators_are_not_line_breaks() -> None:
    # str.splitlines() would split these; JSON strings may hold them, and every reader here agrees.
    row = {"prompt": "a\u2028b\u2029c\x85d", "completion": "c"}
    data = (json.dumps(row, ensure_ascii=False) + "\n").encode() * 10
    assert [r for _, r in iter_rows(data)] == [row] * 10
    assert validate_lines(io.BytesIO(data)).num_examples == 10


def test_an_over_long_line_is_refused_without_being_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_lines, "MAX_LINE_BYTES", 64)
    data = PAIR + b"\n" + b'{"prompt": "' + b"x" * 500 + b'", "completion": "c"}\n' + PAIR + b"\n"
    report = validate_lines(io.BytesIO(data))
    assert [(issue.line, issue.message) for issue in report.issues] == [(2, "is longer than 64 bytes")]


def test_what_upload_accepts_the_loader_reads(tmp_path: Path) -> None:
    tricky = [
        b'{"prompt": "caf\\u00e9 \\ud83e\\udd8a", "completion": "ok"}',  # an escaped surrogate *pair* is fine
        b'{"prompt": "tab\\there", "completion": "x", "n": 12345678901234567890}',
        b'  {"prompt": "spaces", "completion": "around"}  ',
        b'{"prompt": "p", "completion": "c"}\r',
    ] * 3
    path = tmp_path / "tricky.jsonl"
    path.write_bytes(b"\n".join(tricky) + b"\n")
    with path.open("rb") as handle:
        report = validate_lines(handle)
    assert report.valid, report.summary()
    rows = load_rows(str(path))
    assert len(rows) == report.num_examples == 12
    assert rows[0]["prompt"] == "café \U0001f98a"
    assert read_rows(path) == rows


def test_the_loader_refuses_what_upload_refuses(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(file_with(b'{"prompt":\r"p", "completion": "c"}'))
    with pytest.raises(ValueError, match="line 3: contains a carriage return"):
        load_rows(str(path))
