"""Tasks that outlive the gRPC call that started them (a job, the recorder's writes).

A task copies the context it is created in: inside a call that is the call's request id (good: the
job's calls to the registry carry it) and the call's deadline (bad: modelforge_common.tracing caps
every outgoing call at it, so a job launched by StartTraining would call the registry minutes after
that deadline passed and time out at once). These tasks keep the request id and drop the deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

from modelforge_common.logging import request_id_var
from modelforge_common.tracing import deadline_var

T = TypeVar("T")


def detached_context(request_id: str | None = None) -> contextvars.Context:
    """The current context without a call deadline (and with request_id when given)."""
    context = contextvars.copy_context()
    context.run(deadline_var.set, None)
    if request_id is not None:
        context.run(request_id_var.set, request_id)
    return context


def start_detached(coroutine: Coroutine[Any, Any, T], *, name: str, request_id: str | None = None) -> asyncio.Task[T]:
    return asyncio.get_running_loop().create_task(coroutine, name=name, context=detached_context(request_id))
