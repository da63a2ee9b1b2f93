"""Job events -> Server-Sent Events text."""

from __future__ import annotations

import re
from typing import Any

from modelforge_gateway.errors import invalid
from modelforge_gateway.eventhub import event_text

# ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses. 15 digits keep
# every value below 2**53, the largest seq a JavaScript client holds exactly.
LAST_EVENT_ID = r"^[0-9]{0,15}$"
_LAST_EVENT_ID = re.compile(LAST_EVENT_ID)


def last_event_seq(header: str) -> int:
    """The seq in a reconnecting EventSource's Last-Event-ID header (0 when absent or empty)."""
    if not _LAST_EVENT_ID.fullmatch(header):
        raise invalid(["header", "last-event-id"], "must be a sequence number (up to 15 ASCII digits)")
    return int(header) if header else 0


def sse_text(event: dict[str, Any]) -> str:
    """One event as an SSE message; its `id` is its seq (what Last-Event-ID sends back)."""
    seq = event.get("seq")
    head = f"id: {seq}\n" if seq else ""
    return f"{head}event: {event['type']}\ndata: {event_text(event)}\n\n"
