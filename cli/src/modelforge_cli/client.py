"""A thin httpx wrapper over the gateway's public REST API that turns every failure into one
CliError with a one-line message: an ApiError for an HTTP error answer, Unreachable when nothing
answers, a TransportError for anything else on the wire."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from modelforge_cli.config import CliConfig


class CliError(Exception):
    """An error the CLI reports as one line on stderr, then exits 1."""

    def lines(self) -> list[str]:
        return [f"error: {self}"]


class ApiError(CliError):
    def __init__(self, method: str, path: str, status: int, detail: Any) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        super().__init__(f"{method} {path} -> {status}: {format_detail(detail)}")

    @property
    def problems(self) -> list[str]:
        """The detail as a list of "loc: msg" problems (one item when the detail is a plain message)."""
        if isinstance(self.detail, list):
            return [_format_problem(item) for item in self.detail]
        return [format_detail(self.detail)]

    @property
    def route_missing(self) -> bool:
        """True when the gateway does not have the endpoint at all (as opposed to a missing resource):
        404/405 with the framework's bare "Not Found" / "Method Not Allowed" detail."""
        return self.status == 405 or (
            self.status == 404 and isinstance(self.detail, str) and self.detail.strip().lower() == "not found"
        )


class Unreachable(CliError):
    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(f"cannot reach ModelForge at {url} (is it running? try `make up`)")


class TransportError(CliError):
    pass


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(_format_problem(item) for item in detail) or "(no detail)"
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("msg") or json.dumps(detail))
    text = str(detail).strip() if detail is not None else ""
    return " ".join(text.split()) or "(no detail)"


def _format_problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = item.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list | tuple) else str(loc or "")
    message = item.get("msg") or item.get("message") or item.get("description") or ""
    return f"{where}: {message}" if where else str(message)


def _detail_of(response: httpx.Response) -> Any:
    """The body's `detail` (or `error`), else its text."""
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            if body.get(key) not in (None, ""):
                return body[key]
    return body


class ApiClient:
    """One httpx.Client bound to the gateway URL, with the API key and the error mapping."""

    def __init__(self, config: CliConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._http = httpx.Client(
            base_url=config.url,
            headers=config.headers,
            timeout=config.timeout_s,
            transport=transport,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Sends one request; returns the decoded JSON body (or None when empty)."""
        response = self._send(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise TransportError(f"{method} {path} -> {response.status_code}: the answer is not JSON") from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def stream_events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POSTs `body` and yields the JSON object of each Server-Sent Event `data:` line; an
        `event: error` (a failure after the stream began) raises ApiError with its body's detail."""
        try:
            with self._http.stream(
                "POST", path, json=body, timeout=httpx.Timeout(self.config.timeout_s, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError("POST", path, response.status_code, _detail_of(response))
                event_name = ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event_name = line[len("event:") :].strip()
                        continue
                    if not line.startswith("data:"):
                        if not line:
                            event_name = ""  # a blank line ends the event
                        continue  # comments, ids, keep-alives
                    payload = line[len("data:") :].strip()
                    if not payload or payload == "[DONE]":
                        continue
                    try:
                        event = json.loads(payload)
                    except ValueError as exc:
                        raise TransportError(f"POST {path}: bad event in the stream: {payload[:80]}") from exc
                    if event_name == "error":
                        body = event if isinstance(event, dict) else {}
                        status = code if isinstance(code := body.get("status_code"), int) else 500
                        raise ApiError("POST", path, status, body.get("detail") or body.get("error") or event)
                    if isinstance(event, dict):
                        yield event
        except httpx.HTTPError as exc:
            raise self._transport_error("POST", path, exc) from exc

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(method, path, exc) from exc
        if response.status_code >= 400:
            raise ApiError(method, path, response.status_code, _detail_of(response))
        return response

    def _transport_error(self, method: str, path: str, exc: httpx.HTTPError) -> CliError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return Unreachable(self.config.url)
        if isinstance(exc, httpx.TimeoutException):
            return TransportError(f"{method} {path}: no answer within {self.config.timeout_s:g} s (--timeout)")
        return TransportError(f"{method} {path}: {type(exc).__name__}: {exc}")


def items_of(body: Any, key: str) -> list[dict[str, Any]]:
    """The list in an envelope (`{"models": [...]}`) or a bare list, as the two spec documents differ."""
    if isinstance(body, dict):
        body = body.get(key, [])
    return [item for item in body if isinstance(item, dict)] if isinstance(body, list) else []
