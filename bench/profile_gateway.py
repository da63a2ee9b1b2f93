"""Profiles a gateway process with pyinstrument while it answers GET /api/training_status back to back.

A second gateway (same services, own port) runs under `python -m pyinstrument`; SIGINT makes uvicorn
shut down cleanly, and pyinstrument then writes its text report. The busiest call paths say where the
time over a direct gRPC call goes.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import BenchContext
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


def profile_gateway(context: BenchContext, requests: int = 1500, path: str = "/api/training_status") -> str:
    """The pyinstrument text report (the first 60 lines) of a gateway serving `requests` requests."""
    port = free_port()
    report = context.work_dir / "gateway-profile.txt"
    env = {**context.stack.env, "MODELFORGE_GATEWAY_PORT": str(port), "MODELFORGE_LOG_LEVEL": "WARNING"}
    argv = [
        sys.executable,
        "-m",
        "pyinstrument",
        "-r",
        "text",
        "--show-all",
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
        return f"(no profile written; gateway log: {log_path.read_text()[-1000:]})"
    lines = _trim(Path(report).read_text().splitlines())
    header = (
        f"{requests} x GET {path}, one keep-alive client, {1000 * per_request:.2f} ms per request under pyinstrument"
    )
    return "\n".join([header, *lines])


def _trim(lines: list[str], limit: int = 60) -> list[str]:
    """Drops pyinstrument's banner and keeps the heaviest part of the tree."""
    body = [line.rstrip() for line in lines if line.strip() and not line.lstrip().startswith(("_", "Recorded:"))]
    return body[:limit]
