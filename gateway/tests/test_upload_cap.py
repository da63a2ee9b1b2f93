"""The dataset upload cap is enforced while the body streams (issue 14 item 6): a chunked upload
(no Content-Length) over the cap gets a 413 JSON error after at most the cap plus one message has
been spooled, and nothing reaches the registry. Real HTTP: uvicorn serving the app, httpx sending a
generator body (chunked transfer encoding)."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import starlette.formparsers
import uvicorn
from gateway_fakes import FakeServices, settings_for

from modelforge_common.testing import free_port
from modelforge_gateway.main import create_app

MIB = 1024 * 1024
CAP = 256 * 1024
BOUNDARY = "modelforgeboundary1234"
ROW = b'{"prompt": "What is the capital of France?", "completion": "Paris."}\n'


class RecordingSpool(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """The multipart parser's spool file, kept in a test folder and counting what it is given."""

    written: list[int] = []
    folder: Path | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "dir": str(self.folder)})
        self.index = len(self.written)
        self.written.append(0)

    def write(self, data: Any) -> int:
        self.written[self.index] += len(data)
        return int(super().write(data))


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type[RecordingSpool]:
    monkeypatch.setattr(RecordingSpool, "written", [])
    monkeypatch.setattr(RecordingSpool, "folder", tmp_path)
    # A spool that goes to disk at once, so every byte written is a byte on disk.
    monkeypatch.setattr(starlette.formparsers.MultiPartParser, "spool_max_size", 1)
    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", RecordingSpool)
    return RecordingSpool


@pytest.fixture
def gateway_url(fakes: FakeServices) -> Iterator[str]:
    port = free_port()
    app = create_app(settings_for(fakes, max_upload_bytes=CAP))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    while not server.started and thread.is_alive():
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def multipart_stream(filename: str, content_bytes: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    """A multipart/form-data body with one file part, produced piece by piece (never whole)."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    rows = ROW * (piece // len(ROW) + 1)
    sent = 0
    while sent < content_bytes:
        chunk = rows[: min(piece, content_bytes - sent)]
        sent += len(chunk)
        yield chunk
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def post_chunked(url: str, body: Iterator[bytes]) -> httpx.Response:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with httpx.Client(timeout=30) as client:
        response = client.post(f"{url}/api/upload_dataset", content=body, headers=headers)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    return response


def test_a_chunked_upload_over_the_cap_is_413_with_at_most_the_cap_spooled(
    gateway_url: str, fakes: FakeServices, spool: type[RecordingSpool], tmp_path: Path
) -> None:
    response = post_chunked(gateway_url, multipart_stream("big.jsonl", 64 * MIB))
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["status_code"] == 413 and "limit" in body["detail"]
    # Never more than the cap plus 1 MiB written; in fact the cap plus one network read.
    assert spool.written, "the multipart parser never spooled: the test measured nothing"
    assert sum(spool.written) <= CAP + MIB
    assert max(spool.written) <= CAP + 64 * 1024
    # Nothing stored, nothing left behind.
    assert fakes.registry.upload_messages == [] and fakes.registry.datasets == {}
    assert list(tmp_path.iterdir()) == []


def test_a_chunked_upload_under_the_cap_is_stored(
    gateway_url: str, fakes: FakeServices, spool: type[RecordingSpool]
) -> None:
    size = 40 * len(ROW)
    response = post_chunked(gateway_url, multipart_stream("small.jsonl", size, piece=len(ROW) * 7))
    assert response.status_code == 200, response.text
    assert response.json()["num_examples"] == 40
    assert sum(fakes.registry.upload_messages) == size
    assert spool.written == [size]


def test_a_declared_length_over_the_cap_is_413_before_anything_is_read(
    gateway_url: str, fakes: FakeServices, spool: type[RecordingSpool]
) -> None:
    content = b"".join(multipart_stream("big.jsonl", 2 * CAP))
    with httpx.Client(timeout=30) as client:
        response = client.post(
            f"{gateway_url}/api/upload_dataset",
            content=content,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
    assert response.status_code == 413
    assert spool.written == []
    assert fakes.registry.upload_messages == []
