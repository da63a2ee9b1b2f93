"""The real event source for follow.py: the gateway's WS /ws/training?job_id=<id>[&since=<seq>]."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from modelforge_cli.client import ApiError, Unreachable
from modelforge_cli.config import CliConfig
from modelforge_cli.follow import Connector, Event, FollowError, StreamDropped

WS_PATH = "/ws/training"
_IGNORED_TYPES = frozenset({"heartbeat", "ping", "pong", "keepalive"})


def _fatal_close(code: int | None, reason: str) -> bool:
    """Closes that mean "do not come back": the application range, and a policy close for an unknown
    job. Other closes (going away, try again later, a policy close of a client that fell behind)
    are worth a reconnect, which resumes after the last event seen."""
    if code is None:
        return False
    return 4000 <= code <= 4999 or (code == 1008 and "not found" in reason.lower())


class WebSocketStream:
    def __init__(self, socket: ClientConnection, job_id: str) -> None:
        self._socket = socket
        self._job_id = job_id

    async def recv(self) -> Event | None:
        while True:
            try:
                raw = await self._socket.recv()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                if _fatal_close(code, reason):
                    raise FollowError(f"WS {WS_PATH} closed by the gateway ({code}): {reason or 'no reason'}") from exc
                if code == 1000:
                    return None
                why = f"close code {code}" if code is not None else "no close frame"
                raise StreamDropped(f"connection lost ({why}{': ' + reason if reason else ''})") from exc
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # not an event
            if not isinstance(event, dict) or event.get("type") in _IGNORED_TYPES:
                continue
            if event.get("job_id") not in (None, "", self._job_id):
                continue  # another job's event on a shared socket
            if event.get("type") == "error" and "status" not in event:
                detail = event.get("detail") or event.get("error") or event.get("message") or "unknown error"
                raise FollowError(f"WS {WS_PATH}: {detail}")
            return event

    async def close(self) -> None:
        await self._socket.close()


def websocket_connector(config: CliConfig, job_id: str, open_timeout_s: float = 10.0) -> Connector:
    async def open_stream(since: int | None) -> WebSocketStream:
        query: dict[str, str | int] = {"job_id": job_id}
        if since is not None:
            query["since"] = since
        url = f"{config.ws_url(WS_PATH)}?{urlencode(query)}"
        try:
            socket = await connect(
                url,
                additional_headers=config.headers or None,
                open_timeout=open_timeout_s,
                ping_interval=20,
                ping_timeout=20,
                max_size=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status >= 500:
                raise StreamDropped(f"WS {WS_PATH} -> {status}") from exc
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            raise ApiError("WS", WS_PATH, status, _detail(body) or exc.response.reason_phrase) from exc
        except InvalidURI as exc:
            raise FollowError(f"bad WebSocket URL {url}: {exc}") from exc
        except (InvalidHandshake, TimeoutError) as exc:
            raise StreamDropped(f"WS {WS_PATH}: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:  # refused, unknown host, network down
            raise Unreachable(config.url) from exc
        return WebSocketStream(socket, job_id)

    return open_stream


def _detail(body: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(parsed, dict) and parsed.get("detail"):
        return str(parsed["detail"])
    return body.strip()
