"""Profiles a gateway process with pyinstrument while it answers GET /api/training_status back to back.

A second gateway (same services, own port) runs under `python -m pyinstrument`; SIGINT makes uvicorn
shut down cleanly, and pyinstrument then saves its session. The session's self time, grouped by the
library each frame belongs to, says where a request's time over a direct gRPC call goes.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx
from pyinstrument.frame import Frame
from pyinstrument.session import Session

from bench.common import BenchContext, Table
from bench.httpclient import KeepAliveClient
from modelforge_common.testing import free_port


async def _hammer(port: int, path: str, requests: int) -> float:
    client = KeepAliveClient("127.0.0.1", port)
    started = time.perf_counter()
    try:
        for _ in range(requests):
            status, body = await client.get(path)
            if status != 200:
                raise RuntimeError(f"GET {path} -> {status}: {body[:200]!r}")
    finally:
        await client.close()
    return (time.perf_counter() - started) / requests


# (label, substrings of a frame's file path or identifier), first match wins.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting: trainer-svc's reply, the next request", ("[await]",)),
    ("gateway code (middleware, routes, converters)", ("modelforge_",)),
    ("grpc client call (the direct side pays this too)", ("/grpc/",)),
    ("protobuf", ("/google/protobuf/",)),
    ("pydantic: response validation and JSON", ("/pydantic",)),
    ("fastapi: dependencies, parameters, response handling", ("/fastapi/",)),
    ("starlette: routing, middleware, request objects", ("/starlette/", "/anyio/")),
    ("uvicorn: HTTP parsing and protocol", ("/uvicorn/", "httptools")),
    ("event loop (asyncio, uvloop)", ("/asyncio/", "uvloop", "/selectors.py")),
)


def profile_gateway(context: BenchContext, requests: int = 1500, path: str = "/api/training_status") -> Table:
    """Where a gateway serving `requests` back-to-back requests spends its time, by layer."""
    port = free_port()
    report = context.work_dir / "gateway-profile.pyisession"
    env = {**context.stack.env, "MODELFORGE_GATEWAY_PORT": str(port), "MODELFORGE_LOG_LEVEL": "WARNING"}
    argv = [
        sys.executable,
        "-m",
        "pyinstrument",
        "-r",
        "session",
        "-o",
        str(report),
        "-m",
        "modelforge_gateway",
    ]
    log_path = context.work_dir / "gateway-profile.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"profiled gateway did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        per_request = asyncio.run(_hammer(port, path, requests))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if not report.exists():
        raise RuntimeError(f"no profile written; gateway log: {log_path.read_text()[-1000:]}")
    return layer_table(Session.load(report), requests, path, per_request)


def layer_of(frame: Frame) -> str:
    where = f"{frame.file_path or ''} {frame.identifier}"
    for label, needles in LAYERS:
        if any(needle in where for needle in needles):
            return label
    return "other"


def request_frames(root: Frame) -> list[Frame]:
    """The outermost frames of uvicorn's protocol code: HTTP parsing and the whole ASGI call of each
    request, and nothing of start-up, imports or the idle loop between requests."""
    found, stack = [], [root]
    while stack:
        frame = stack.pop()
        if "/uvicorn/protocols/" in (frame.file_path or ""):
            found.append(frame)
        else:
            stack.extend(frame.children)
    return found


def self_time_by_layer(roots: list[Frame]) -> dict[str, float]:
    """Seconds of self time (a frame's time minus its real children's) per layer within these
    subtrees; a synthetic [await] frame is time spent waiting, not working."""
    totals: dict[str, float] = {}
    stack = list(roots)
    while stack:
        frame = stack.pop()
        real = [child for child in frame.children if not child.is_synthetic]
        waited = sum(child.time for child in frame.children if child.identifier.startswith("[await]"))
        own = frame.time - sum(child.time for child in real) - waited
        if own > 0:
            layer = layer_of(frame)
            totals[layer] = totals.get(layer, 0.0) + own
        if waited > 0:
            totals[LAYERS[0][0]] = totals.get(LAYERS[0][0], 0.0) + waited
        stack.extend(real)
    return totals


def layer_table(session: Session, requests: int, path: str, per_request_s: float) -> Table:
    root = session.root_frame()
    table = Table(
        f"Where the gateway's time goes: {requests} x GET {path}, one keep-alive client, pyinstrument "
        f"(wall clock; {1000 * per_request_s:.2f} ms per request while profiled)",
        ["layer", "ms per request", "share of request time"],
    )
    if root is None:
        return table
    totals = self_time_by_layer(request_frames(root))
    counted = sum(totals.values())
    for label in [label for label, _ in LAYERS] + ["other"]:
        seconds = totals.get(label, 0.0)
        if seconds > 0:
            table.add(label, 1000 * seconds / requests, f"{100 * seconds / counted:.0f}%")
    table.add("total in uvicorn's protocol and ASGI call", 1000 * counted / requests, "100%")
    return table
