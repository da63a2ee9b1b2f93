"""EventStreamResponse: a Server-Sent Events body streamed from an async iterator of ready frames.

Starlette's StreamingResponse does the same under an ASGI 2.3 server (uvicorn's HTTP) by running the
body in an anyio task group beside a task that waits for the client's disconnect: a task group, two
cancel scopes and a task per response, a few percent of a playground stream request's CPU in the
gateway (bench/ANALYSIS.md, Serving). Here the body runs in the request's own task and one plain
asyncio task waits for the disconnect; a disconnect cancels the body where it waits (typically the
next gRPC read), so the iterator's cleanup (cancelling the upstream call) runs as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.frames = frames
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        disconnected = False
        finished = False

        async def watch() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            if not finished:  # a disconnect after the last frame cancels nothing
                disconnected = True
                streaming.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            finished = True
        except asyncio.CancelledError:
            if not disconnected:
                raise  # cancelled from outside (shutdown): not ours to swallow
            streaming.uncancel()
        except OSError as exc:  # an ASGI 2.4 server's send after the client left
            raise ClientDisconnect() from exc
        finally:
            finished = True
            watcher.cancel()
            aclose = getattr(self.frames, "aclose", None)
            if aclose is not None:
                await aclose()
