"""A minimal keep-alive HTTP/1.1 GET client on asyncio streams.

Latency benchmarks measure the server, so the client should cost next to nothing: a general client
(httpx) spends a few hundred microseconds per request in Python, which would be charged to the
gateway. This one writes a fixed request and reads a Content-Length body, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib


class HttpError(Exception):
    pass


class KeepAliveClient:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> tuple[int, bytes]:
        """(status, body); reconnects once when the server closed an idle connection."""
        for attempt in (1, 2):
            if self._writer is None:
                await self._connect()
            try:
                return await self._roundtrip(path)
            except (asyncio.IncompleteReadError, ConnectionError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _roundtrip(self, path: str) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: */*\r\n\r\n".encode())
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise HttpError(f"bad status line {lines[0]!r}") from exc
        length = None
        closing = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            lowered = name.strip().lower()
            if lowered == "content-length":
                length = int(value.strip())
            elif lowered == "connection" and value.strip().lower() == "close":
                closing = True
        if length is None:
            raise HttpError(f"GET {path}: response without Content-Length")
        body = await self._reader.readexactly(length)
        if closing:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None
