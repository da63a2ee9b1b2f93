"""Starts and stops the local stack: nats-server (unless one is reachable), the four services and the
gateway, each as `python -m <module>` in its own process group.

`make up` / `make down` / `make status` call this module; the end-to-end tests use `Stack` directly
with free ports and a private data dir. Every MODELFORGE_* variable of the caller's environment reaches
the services unchanged (they inherit the environment); only unset ones get local defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from modelforge_common.settings import DEFAULT_PORTS
from modelforge_common.testing import nats_server_binary, wait_for_grpc_health

# What each service runs; the container images use the same modules as their entrypoints.
SERVICE_MODULES: dict[str, str] = {
    "registry": "modelforge_registry",
    "hardware": "modelforge_hardware",
    "inference": "modelforge_inference",
    "trainer": "modelforge_trainer",
    "gateway": "modelforge_gateway",
}
START_ORDER = ("registry", "hardware", "inference", "trainer", "gateway")
NATS = "nats"
TRAINER = "trainer"


def replica_names(count: int) -> list[str]:
    """trainer, trainer-2, trainer-3 ...: extra trainer-svc replicas beside the first."""
    return [TRAINER] + [f"{TRAINER}-{index}" for index in range(2, count + 1)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """The environment the services get: the caller's, plus defaults for what it leaves unset."""
    merged = dict(env)
    merged.setdefault("MODELFORGE_DATA_DIR", ".modelforge")
    # One absolute data dir so every process agrees whatever its cwd.
    merged["MODELFORGE_DATA_DIR"] = str(Path(merged["MODELFORGE_DATA_DIR"]).expanduser().resolve())
    merged.setdefault("MODELFORGE_NATS_URL", "nats://127.0.0.1:4222")
    merged.setdefault("MODELFORGE_LOG_JSON", "true")
    for name, port in DEFAULT_PORTS.items():
        if name != "gateway":
            merged.setdefault(f"MODELFORGE_{name.upper()}_ADDR", f"127.0.0.1:{port}")
    merged.setdefault("MODELFORGE_GATEWAY_PORT", str(DEFAULT_PORTS["gateway"]))
    merged.setdefault("HF_HUB_OFFLINE", "1")
    merged["PYTHONUNBUFFERED"] = "1"
    # Replicas beyond the first serve gRPC on ports of their own; they share the job queue and the
    # data dir. The gateway talks to the first one (the jobs API reads the registry, so any will do).
    for name in replica_names(int(merged.get("MODELFORGE_TRAINER_REPLICAS", "1")))[1:]:
        key = f"MODELFORGE_{name.upper().replace('-', '_')}_ADDR"
        merged.setdefault(key, f"127.0.0.1:{_free_port()}")
    return merged


def _reachable(url: str, timeout: float = 0.5) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Stack:
    """The processes of one local stack, tracked through pid files in run_dir."""

    env: dict[str, str]
    run_dir: Path
    python: str = sys.executable
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Stack:
        merged = local_defaults(env if env is not None else os.environ)
        run_dir = Path(merged.get("MODELFORGE_RUN_DIR", Path(merged["MODELFORGE_DATA_DIR"]) / "run"))
        return cls(env=merged, run_dir=run_dir)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.env['MODELFORGE_GATEWAY_PORT']}"

    @property
    def trainers(self) -> list[str]:
        """Every trainer-svc replica's name (MODELFORGE_TRAINER_REPLICAS, default 1)."""
        return replica_names(int(self.env.get("MODELFORGE_TRAINER_REPLICAS", "1")))

    @property
    def names(self) -> tuple[str, ...]:
        """Every process in start order (the gateway last), then NATS."""
        return (*START_ORDER[:-1], *self.trainers[1:], START_ORDER[-1], NATS)

    def addr(self, service: str) -> str:
        return self.env[f"MODELFORGE_{service.upper().replace('-', '_')}_ADDR"]

    def service_env(self, name: str) -> dict[str, str]:
        """With several trainer replicas each listens on its own address and names itself in job records."""
        if name not in self.trainers or len(self.trainers) == 1:
            return self.env
        return {**self.env, "MODELFORGE_TRAINER_ADDR": self.addr(name), "MODELFORGE_REPLICA_NAME": name}

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def _pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            process = subprocess.Popen(
                argv, env=self.service_env(name), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: `down` also reaps training children
            )
        self._pid_path(name).write_text(json.dumps({"pid": process.pid, "argv": argv}))
        self.started[name] = process
        return process

    def start_nats(self) -> bool:
        """Reuses a NATS reachable at MODELFORGE_NATS_URL, else starts one with JetStream."""
        url = self.env["MODELFORGE_NATS_URL"]
        if _reachable(url):
            return False
        parsed = urlparse(url)
        store = Path(self.env["MODELFORGE_DATA_DIR"]) / "nats"
        store.mkdir(parents=True, exist_ok=True)
        self._spawn(NATS, [nats_server_binary(), "-a", parsed.hostname or "127.0.0.1",
                           "-p", str(parsed.port or 4222), "-js", "-sd", str(store)])
        deadline = time.monotonic() + 20
        while not _reachable(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start; see {self.log_path(NATS)}")
            time.sleep(0.1)
        return True

    def start_service(self, name: str, timeout: float = 120.0) -> None:
        process = self._spawn(name, [self.python, "-m", SERVICE_MODULES[name.split("-")[0]]])
        try:
            if name == "gateway":
                self._wait_http(f"{self.gateway_url}/api/health", process, timeout)
            else:
                wait_for_grpc_health(self.addr(name), timeout=timeout)
        except TimeoutError as exc:
            raise RuntimeError(f"{name} did not become ready: {exc}\n{self.tail(name)}") from exc

    def _wait_http(self, url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise TimeoutError(f"exited with {process.returncode}")
            with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{url} not answering after {timeout}s")

    def start(self) -> None:
        self.start_nats()
        for name in self.names[:-1]:
            self.start_service(name)

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def running(self) -> dict[str, int]:
        """Processes from pid files that are still alive."""
        alive = {}
        for name in self.names:
            path = self._pid_path(name)
            if not path.exists():
                continue
            pid = int(json.loads(path.read_text())["pid"])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            alive[name] = pid
        return alive

    def stop_one(self, name: str, grace_s: float = 15.0, sig: int = signal.SIGTERM) -> None:
        """Signals the process group (the service and any child it spawned), then SIGKILLs stragglers."""
        path = self._pid_path(name)
        if not path.exists():
            return
        pid = int(json.loads(path.read_text())["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(pid):
            if name in self.started:
                self.started[name].poll()
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if name in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.started.pop(name).wait(timeout=5)
        path.unlink(missing_ok=True)

    def stop(self) -> None:
        for name in (*reversed(self.names[:-1]), NATS):
            self.stop_one(name)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts as a member; treat a group whose only member is a zombie as gone.
    try:
        with open(f"/proc/{pgid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    stack = Stack.from_environment()
    out = sys.stdout
    if command == "up":
        alive = stack.running()
        if alive:
            out.write(f"already running: {', '.join(sorted(alive))} (make down first)\n")
            return 0
        try:
            reused = not stack.start_nats()
            out.write(f"nats: {'reusing ' if reused else 'started '}{stack.env['MODELFORGE_NATS_URL']}\n")
            for name in stack.names[:-1]:
                stack.start_service(name)
                out.write(f"{name}: ready ({SERVICE_MODULES[name.split('-')[0]]})\n")
        except RuntimeError as exc:
            sys.stderr.write(f"make up failed: {exc}\n")
            stack.stop()
            return 1
        out.write(f"ModelForge is up: {stack.gateway_url} (data in {stack.env['MODELFORGE_DATA_DIR']}, "
                  f"logs in {stack.run_dir})\n")
        return 0
    if command == "down":
        alive = stack.running()
        stack.stop()
        out.write(f"stopped: {', '.join(sorted(alive)) or 'nothing was running'}\n")
        return 0
    if command == "status":
        alive = stack.running()
        for name in stack.names:
            out.write(f"{name:10s} {'pid ' + str(alive[name]) if name in alive else 'stopped'}\n")
        return 0
    sys.stderr.write("usage: python -m modelforge_devkit.stack up|down|status\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
