"""Starts and stops the local stack: nats-server (unless one is reachable), the four services and the
gateway, each as `python -m <module>` in its own process group.

`make up` / `make down` / `make status` call this module; the end-to-end tests use `Stack` directly
with free ports and a private data dir. Every MODELFORGE_* variable of the caller's environment reaches
the services unchanged, except secrets: each goes only to the processes that read it (SECRET_CONSUMERS).
Unset variables get local defaults.

`up` starts whatever of the stack is not running (all of it the first time) and says what it started.
Each stack keeps pid files and logs in its run dir (`<data dir>/run`), and `up` records that run dir in
a state dir that does not depend on the data dir (MODELFORGE_STATE_DIR, default
`$XDG_STATE_HOME/modelforge/stacks`), so `down` finds and stops every stack `up` started, whatever
MODELFORGE_DATA_DIR says when it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from typing import TextIO
from urllib.parse import urlparse

# Claimed ports: stacks started at once by other processes (pytest workers) never share one.
from modelforge_common.ports import free_port
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

# Who reads each secret; every other process (nats-server included) starts without it. Training
# workers inherit the trainer's environment: they download the base model. hardware-svc reads
# config.json of gated Hub repos for its estimates, so it gets the read token too; only inference-svc
# pushes (MODELFORGE_HF_TOKEN, which may hold a write token).
# The registry fetches Hub datasets (POST /api/hub/datasets) with the read token, like the others read models.
HUB_READERS = frozenset({TRAINER, "inference", "hardware", "registry"})
SECRET_CONSUMERS: dict[str, frozenset[str]] = {
    "MODELFORGE_API_KEYS": frozenset({"gateway"}),
    "MODELFORGE_HF_TOKEN": frozenset({"inference"}),
    "HF_TOKEN": HUB_READERS,
    "HUGGING_FACE_HUB_TOKEN": HUB_READERS,
    # May carry the PostgreSQL password; only the registry has a database.
    "MODELFORGE_DATABASE_URL": frozenset({"registry"}),
    "MODELFORGE_DATABASE_PASSWORD": frozenset({"registry"}),
    # Credentials for the trace collector (OTLP headers): every service exports traces, nats-server does not.
    "OTEL_EXPORTER_OTLP_HEADERS": frozenset(SERVICE_MODULES),
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": frozenset(SERVICE_MODULES),
}
# `down` stops the gateway first (no new requests), NATS last (the services drain into it).
STOP_ORDER = ("gateway", TRAINER, "inference", "hardware", "registry", NATS)


def role_of(name: str) -> str:
    """The service a process runs: trainer-2 is a trainer."""
    return name.split("-")[0]


def without_secrets(env: Mapping[str, str], name: str) -> dict[str, str]:
    """env minus the secrets process `name` does not read."""
    role = role_of(name)
    return {key: value for key, value in env.items() if key not in SECRET_CONSUMERS or role in SECRET_CONSUMERS[key]}


def state_dir(env: Mapping[str, str]) -> Path:
    """Where `up` records the run dirs of the stacks it started: independent of the data dir."""
    explicit = env.get("MODELFORGE_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base).expanduser().resolve() / "modelforge" / "stacks"


def process_start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/<pid>/stat field 22): with the pid it
    identifies one process, so a pid file never makes `down` signal an unrelated process that reused
    the pid. None when the process is gone (or there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (children in their own session included, such as training
    workers), read from /proc before anything is signalled: once the parent dies they are re-parented
    and can no longer be traced back to it."""
    if not HAVE_PROC:
        return []
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def replica_names(count: int) -> list[str]:
    """trainer, trainer-2, trainer-3 ...: extra trainer-svc replicas beside the first."""
    return [TRAINER] + [f"{TRAINER}-{index}" for index in range(2, count + 1)]


def private_env(data_dir: Path, settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a stack of its own (tests, benchmarks): the caller's, less its MODELFORGE_*
    settings, with its data in data_dir, every service on a free loopback port, plain-text logs and no
    Hub; `settings` add to or replace these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFORGE_")}
    env.update({
        "MODELFORGE_DATA_DIR": str(data_dir),
        "MODELFORGE_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "MODELFORGE_GATEWAY_PORT": str(free_port()),
        "MODELFORGE_LOG_JSON": "false",
        "HF_HUB_OFFLINE": "1",
    })
    for name in (TRAINER, "registry", "hardware", "inference"):
        env[f"MODELFORGE_{name.upper()}_ADDR"] = f"127.0.0.1:{free_port()}"
    env.update(settings or {})
    return env


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
        merged.setdefault(key, f"127.0.0.1:{free_port()}")
    return merged


def _reachable(url: str, timeout: float = 0.5) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class PidRecord:
    """What a pid file says: the process (pid and start time), and what it runs."""

    name: str
    pid: int
    started_ticks: int | None
    argv: list[str]

    def alive(self) -> bool:
        """The same process is still running (not a zombie, not a later one that reused the pid)."""
        return _same_process_running(self.pid, self.started_ticks)


HAVE_PROC = Path("/proc/self/stat").exists()


def _same_process_running(pid: int, started_ticks: int | None) -> bool:
    if not HAVE_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    if started_ticks is not None and int(fields[19]) != started_ticks:
        return False
    return fields[0] != "Z"


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
        return cls(env=merged, run_dir=run_dir.expanduser().resolve())

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

    @property
    def services(self) -> tuple[str, ...]:
        """The services in start order (NATS, started first, is not one of them)."""
        return self.names[:-1]

    def addr(self, service: str) -> str:
        return self.env[f"MODELFORGE_{service.upper().replace('-', '_')}_ADDR"]

    def service_env(self, name: str) -> dict[str, str]:
        """The environment process `name` starts with: the stack's, without the secrets it does not read.
        With several trainer replicas each listens on its own address and names itself in job records."""
        env = without_secrets(self.env, name)
        if name in self.trainers and len(self.trainers) > 1:
            env.update({"MODELFORGE_TRAINER_ADDR": self.addr(name), "MODELFORGE_REPLICA_NAME": name})
        return env

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
        record = {"pid": process.pid, "started_ticks": process_start_ticks(process.pid), "argv": argv}
        self._pid_path(name).write_text(json.dumps(record))
        self.started[name] = process
        return process

    def nats_reachable(self) -> bool:
        return _reachable(self.env["MODELFORGE_NATS_URL"])

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

    def listen_addr(self, name: str) -> str:
        return f"127.0.0.1:{self.env['MODELFORGE_GATEWAY_PORT']}" if name == "gateway" else self.addr(name)

    def start_service(self, name: str, timeout: float = 120.0) -> None:
        # Something else on the port would answer the readiness check in our process's place.
        addr = self.listen_addr(name)
        if _reachable(f"tcp://{addr}"):
            raise RuntimeError(f"{name}: {addr} is already in use by a process this stack did not start")
        process = self._spawn(name, [self.python, "-m", SERVICE_MODULES[role_of(name)]])
        try:
            if name == "gateway":
                self._wait_http(f"{self.gateway_url}/api/health", process, timeout)
            else:
                wait_for_grpc_health(addr, timeout=timeout)
            if process.poll() is not None:
                raise TimeoutError(f"exited with {process.returncode}")
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
        for name in self.services:
            self.start_service(name)

    def start_missing(self) -> list[str]:
        """Starts what is not running (NATS when none is reachable, then each service in start order)
        and returns what it started. When a start fails, what this call started is stopped again."""
        alive = self.running()
        started: list[str] = []
        try:
            if self.start_nats():
                started.append(NATS)
            for name in self.services:
                if name not in alive:
                    self.start_service(name)
                    started.append(name)
        except (RuntimeError, OSError):
            for name in reversed(started):
                self.stop_one(name)
            raise
        return started

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def pid_records(self) -> dict[str, PidRecord]:
        """Every pid file in run_dir, whatever replica count this environment names."""
        records: dict[str, PidRecord] = {}
        for path in sorted(self.run_dir.glob("*.pid")) if self.run_dir.is_dir() else []:
            try:
                data = json.loads(path.read_text())
                records[path.stem] = PidRecord(path.stem, int(data["pid"]), data.get("started_ticks"),
                                               list(data.get("argv", [])))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a torn or foreign file: nothing this stack can signal safely
        return records

    def running(self) -> dict[str, int]:
        """Processes from pid files that are still alive (the very processes that were started)."""
        return {name: record.pid for name, record in self.pid_records().items() if record.alive()}

    def stop_one(self, name: str, grace_s: float = 15.0, sig: int = signal.SIGTERM) -> None:
        """Signals the process group (the service and any child it spawned) and the descendants that left
        it (training workers run in their own session), then SIGKILLs stragglers."""
        path = self._pid_path(name)
        record = self.pid_records().get(name)
        ticks = process_start_ticks(record.pid) if record is not None else None
        if record is None or (ticks is not None and record.started_ticks not in (None, ticks)):
            # No pid file, or its pid now belongs to another process: nothing of ours to signal.
            self._reap(name)
            path.unlink(missing_ok=True)
            return
        pid = record.pid
        # A gone leader (ticks None) may leave members in its group: the group id stays ours while they live.
        family = [(child, process_start_ticks(child)) for child in descendants(pid)] if ticks is not None else []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        for child, _ in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (_group_alive(pid) or _any_alive(family)):
            self._reap(name, block=False)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        for child, child_ticks in family:
            if _same_process_running(child, child_ticks):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
        self._reap(name)
        path.unlink(missing_ok=True)

    def _reap(self, name: str, block: bool = True) -> None:
        """Collects the exit status of a process this object started (a zombie otherwise)."""
        process = self.started.get(name)
        if process is None:
            return
        if not block:
            process.poll()
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        self.started.pop(name, None)

    def stop(self) -> list[str]:
        """Stops every process with a pid file (gateway first, NATS last); returns those that were alive."""
        alive = self.running()
        names = sorted(self.pid_records(), key=_stop_rank)
        for name in names:
            self.stop_one(name)
        return sorted(alive, key=_stop_rank)

    # --- the record of stacks `up` started --------------------------------------------------------

    def state_file(self) -> Path:
        digest = hashlib.sha256(str(self.run_dir).encode()).hexdigest()[:16]
        return state_dir(self.env) / f"{digest}.json"

    def record(self) -> None:
        """Notes this stack's run dir where `down` looks whatever the data dir is then."""
        path = self.state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"run_dir": str(self.run_dir), "data_dir": self.env["MODELFORGE_DATA_DIR"],
                "gateway_url": self.gateway_url}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(body))
        temporary.replace(path)

    def forget(self) -> None:
        self.state_file().unlink(missing_ok=True)


def recorded_stacks(env: Mapping[str, str]) -> list[Stack]:
    """Every stack `up` recorded in the state dir (their run dirs hold the pid files)."""
    stacks = []
    directory = state_dir(env)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            run_dir = Path(json.loads(path.read_text())["run_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # unreadable: it points nowhere `down` could go
            continue
        stacks.append(Stack(env={**env, "MODELFORGE_STATE_DIR": str(directory)}, run_dir=run_dir))
    return stacks


def _stop_rank(name: str) -> int:
    role = role_of(name)
    return STOP_ORDER.index(role) if role in STOP_ORDER else len(STOP_ORDER) - 1


def _any_alive(processes: list[tuple[int, int | None]]) -> bool:
    return any(ticks is not None and _same_process_running(pid, ticks) for pid, ticks in processes)


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


def up(stack: Stack, out: TextIO, err: TextIO) -> int:
    alive = stack.running()
    missing = [name for name in stack.services if name not in alive]
    if not missing and stack.nats_reachable():
        stack.record()
        out.write(f"already running: {', '.join(sorted(alive, key=_stop_rank))}; nothing to start "
                  f"({stack.gateway_url})\n")
        return 0
    if alive:
        out.write(f"running: {', '.join(sorted(alive))}; starting what is missing\n")
    try:
        started = stack.start_missing()
    except (RuntimeError, OSError) as exc:
        err.write(f"make up failed: {exc}\n")
        if not stack.running():
            stack.forget()
        return 1
    stack.record()
    if NATS not in started and NATS not in alive:
        out.write(f"nats: reusing {stack.env['MODELFORGE_NATS_URL']}\n")
    for name in started:
        module = "nats-server" if name == NATS else SERVICE_MODULES[role_of(name)]
        out.write(f"{name}: started ({module})\n")
    out.write(f"started: {', '.join(started)}\n")
    out.write(f"ModelForge is up: {stack.gateway_url} (data in {stack.env['MODELFORGE_DATA_DIR']}, "
              f"logs in {stack.run_dir})\n")
    return 0


def down(stack: Stack, out: TextIO) -> int:
    """Stops this environment's stack and every stack `up` recorded, whatever their data dirs."""
    stacks = {stack.run_dir: stack}
    for recorded in recorded_stacks(stack.env):
        stacks.setdefault(recorded.run_dir, recorded)
    anything = False
    for each in stacks.values():
        names = each.stop()
        each.forget()
        if names:
            anything = True
            where = "" if each.run_dir == stack.run_dir else f" (run dir {each.run_dir})"
            out.write(f"stopped{where}: {', '.join(names)}\n")
    if not anything:
        out.write("stopped: nothing was running\n")
    return 0


def main(argv: list[str], env: Mapping[str, str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    command = argv[0] if argv else "status"
    stack = Stack.from_environment(env)
    out = out or sys.stdout
    err = err or sys.stderr
    if command == "up":
        return up(stack, out, err)
    if command == "down":
        return down(stack, out)
    if command == "status":
        alive = stack.running()
        for name in (*stack.names, *sorted(set(alive) - set(stack.names))):
            out.write(f"{name:10s} {'pid ' + str(alive[name]) if name in alive else 'stopped'}\n")
        # Stacks started with another data dir: `down` stops them too.
        for other in recorded_stacks(stack.env):
            running = other.running()
            if other.run_dir != stack.run_dir and running:
                out.write(f"also running (run dir {other.run_dir}): {', '.join(sorted(running, key=_stop_rank))}\n")
        return 0
    err.write("usage: python -m modelforge_devkit.stack up|down|status\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
