"""What the backends on a remote generation server (vLLM, TGI) share: how the server's HTTP error
statuses reach the caller (as domain errors, so a status, never INTERNAL)."""

from __future__ import annotations

from modelforge_common.errors import InvalidArgument, ModelForgeError, NotFound, ResourceExhausted, Unavailable


def error_for_status(server: str, status: int, detail: str, what: str = "request") -> ModelForgeError:
    """The domain error for the server's answer `status` to the `what` (its message, `detail`):
    a refused request is invalid, an unknown model not found, 429 overload, anything else unavailable."""
    if status in (400, 422):
        return InvalidArgument(f"{server} rejected the {what}: {detail}")
    if status == 404:
        return NotFound(f"{server} does not serve this model or adapter: {detail}")
    if status == 429:
        return ResourceExhausted(f"{server} server is overloaded: {detail}")
    return Unavailable(f"{server} server answered HTTP {status} to the {what}: {detail}")
