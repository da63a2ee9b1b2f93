"""The `make up` launcher: secrets per process, pid files that identify one process, the record of
stacks `up` started, and (with real processes) `up` after a service died and `down` from another data dir."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelforge_common.logging import SECRET_ENV_VARS
from modelforge_devkit.stack import (
    SECRET_CONSUMERS,
    SERVICE_MODULES,
    Stack,
    main,
    process_start_ticks,
    recorded_stacks,
    state_dir,
)
from modelforge_devkit.stack import private_env as stack_private_env

SECRETS = {
    "MODELFORGE_API_KEYS": "alice:key-for-the-gateway",
    "HF_TOKEN": "hf_read_token_for_downloads",
    "HUGGING_FACE_HUB_TOKEN": "hf_legacy_name_read_token",
    "MODELFORGE_HF_TOKEN": "hf_write_token_for_pushes",
    "MODELFORGE_DATABASE_URL": "postgresql+psycopg://registry:pw@127.0.0.1:5432/test",
    "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer collector-token",
}
# Who may see which of SECRETS (the rule of the house: each process gets only the secrets it uses).
OTLP = "OTEL_EXPORTER_OTLP_HEADERS"
EXPECTED_SECRETS = {
    "gateway": {"MODELFORGE_API_KEYS", OTLP},
    "registry": {"MODELFORGE_DATABASE_URL", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", OTLP},
    "hardware": {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", OTLP},
    "trainer": {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", OTLP},
    "trainer-2": {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", OTLP},
    "inference": {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELFORGE_HF_TOKEN", OTLP},
    "nats": set(),
}


def private_env(tmp_path: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """A stack on free loopback ports with its own state dir (never the user's)."""
    return stack_private_env(data_dir, {"MODELFORGE_STATE_DIR": str(tmp_path / "state"), **extra})


# ---- secrets ------------------------------------------------------------------------------------


def test_each_process_gets_only_the_secrets_it_reads(tmp_path: Path) -> None:
    stack = Stack.from_environment(private_env(tmp_path, tmp_path / "data", MODELFORGE_TRAINER_REPLICAS="2",
                                               **SECRETS))
    assert set(stack.names) == set(EXPECTED_SECRETS)
    for name, allowed in EXPECTED_SECRETS.items():
        env = stack.service_env(name)
        assert {key for key in SECRETS if key in env} == allowed, name
        for key in allowed:
            assert env[key] == SECRETS[key]
        # Everything else still arrives unchanged.
        assert env["MODELFORGE_DATA_DIR"] == stack.env["MODELFORGE_DATA_DIR"]
        assert env["MODELFORGE_REGISTRY_ADDR"] == stack.env["MODELFORGE_REGISTRY_ADDR"]
    assert stack.service_env("trainer-2")["MODELFORGE_TRAINER_ADDR"] == stack.addr("trainer-2")


def test_every_secret_the_logs_redact_is_assigned_to_its_readers() -> None:
    # A secret added to the redaction list must also be kept from the processes that do not read it.
    assert set(SECRET_ENV_VARS) <= set(SECRET_CONSUMERS)
    roles = set(SERVICE_MODULES)
    for key, readers in SECRET_CONSUMERS.items():
        assert readers and readers <= roles, key


# ---- pid files and the record of stacks -------------------------------------------------------------


def test_a_pid_file_whose_pid_was_reused_is_not_running_and_not_signalled(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        stack = Stack.from_environment(private_env(tmp_path, tmp_path / "data"))
        stack.run_dir.mkdir(parents=True)
        ticks = process_start_ticks(sleeper.pid)
        assert ticks is not None
        (stack.run_dir / "registry.pid").write_text(json.dumps({"pid": sleeper.pid, "started_ticks": ticks - 1}))
        assert stack.running() == {}
        stack.stop_one("registry", grace_s=0.5)
        assert sleeper.poll() is None  # another process owns that pid now: left alone
        assert not (stack.run_dir / "registry.pid").exists()

        (stack.run_dir / "registry.pid").write_text(json.dumps({"pid": sleeper.pid, "started_ticks": ticks}))
        assert stack.running() == {"registry": sleeper.pid}
        assert stack.stop() == ["registry"]
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stop_ends_children_that_left_the_process_group(tmp_path: Path) -> None:
    """Training workers run in a session of their own: killing the trainer's group does not reach them."""
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    stack = Stack.from_environment(private_env(tmp_path, tmp_path / "data"))
    stack._spawn("trainer", [sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert process_start_ticks(grandchild) is not None
    stack.stop()
    deadline = time.monotonic() + 10
    while process_start_ticks(grandchild) is not None and time.monotonic() < deadline:
        with open(f"/proc/{grandchild}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                break  # dead, waiting for init to reap it
        time.sleep(0.05)
    else:
        assert process_start_ticks(grandchild) is None
    assert stack.running() == {}


def test_state_dir_does_not_depend_on_the_data_dir(tmp_path: Path) -> None:
    one = private_env(tmp_path, tmp_path / "one")
    two = {**one, "MODELFORGE_DATA_DIR": str(tmp_path / "two")}
    assert state_dir(one) == state_dir(two) == (tmp_path / "state").resolve()
    default = {k: v for k, v in one.items() if k != "MODELFORGE_STATE_DIR"} | {"XDG_STATE_HOME": str(tmp_path / "x")}
    assert state_dir(default) == (tmp_path / "x" / "modelforge" / "stacks").resolve()
    first = Stack.from_environment(one)
    first.record()
    found = recorded_stacks(two)
    assert [stack.run_dir for stack in found] == [(tmp_path / "one" / "run").resolve()]
    first.forget()
    assert recorded_stacks(two) == []


# ---- real processes -------------------------------------------------------------------------------


def launcher(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "modelforge_devkit.stack", command], env=env, capture_output=True, text=True,
        timeout=400, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment names this data dir: what a stack left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.e2e
def test_up_starts_only_what_is_missing_and_down_stops_it_from_any_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = private_env(tmp_path, data_dir, **SECRETS)
    env["MODELFORGE_DATABASE_URL"] = f"sqlite:///{data_dir / 'registry.db'}"  # no PostgreSQL needed here
    stack = Stack.from_environment(env)
    try:
        first = launcher("up", env).stdout
        for name in ("nats", "registry", "hardware", "inference", "trainer", "gateway"):
            assert f"{name}: started" in first, first
        before = stack.running()
        assert set(before) == {"nats", "registry", "hardware", "inference", "trainer", "gateway"}

        # The processes hold only their own secrets (read from the kernel, not from the launcher).
        for name, pid in before.items():
            seen = {key for key in SECRETS if environ_of(pid).get(key)}
            assert seen == EXPECTED_SECRETS[name], name

        again = launcher("up", env).stdout
        assert "already running" in again and "started" not in again.replace("already", ""), again

        os.kill(before["hardware"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while "hardware" in stack.running():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        restarted = launcher("up", env).stdout
        assert "started: hardware\n" in restarted, restarted
        after = stack.running()
        assert after["hardware"] != before["hardware"]
        assert {k: v for k, v in after.items() if k != "hardware"} == {
            k: v for k, v in before.items() if k != "hardware"
        }

        # `down` from another data dir (and run dir) still stops this stack: the state dir records it.
        elsewhere = {**env, "MODELFORGE_DATA_DIR": str(tmp_path / "elsewhere")}
        assert f"also running (run dir {stack.run_dir}): gateway, trainer" in launcher("status", elsewhere).stdout
        stopped = launcher("down", elsewhere).stdout
        for name in after:
            assert name in stopped, stopped
        assert processes_with(str(data_dir)) == []
        assert stack.running() == {}
        assert recorded_stacks(env) == []
        assert "nothing was running" in launcher("down", env).stdout
    finally:
        stack.stop()


def test_main_refuses_an_unknown_command(tmp_path: Path) -> None:
    err = io.StringIO()
    assert main(["sideways"], env=private_env(tmp_path, tmp_path / "d"), out=io.StringIO(), err=err) == 2
    assert "usage" in err.getvalue()


@pytest.mark.integration
def test_up_refuses_a_port_another_process_holds_and_leaves_nothing_running(tmp_path: Path) -> None:
    env = private_env(tmp_path, tmp_path / "data")
    stack = Stack.from_environment(env)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["MODELFORGE_REGISTRY_ADDR"].rsplit(":", 1)[1])))
        squatter.listen()
        out, err = io.StringIO(), io.StringIO()
        try:
            assert main(["up"], env=env, out=out, err=err) == 1
        finally:
            stack.stop()
    assert "registry" in err.getvalue() and "already in use" in err.getvalue(), err.getvalue()
    # The nats-server this `up` had started is stopped again.
    assert "nats" in [path.stem for path in stack.run_dir.glob("*.log")]
    assert not stack.nats_reachable() and stack.running() == {}
    assert recorded_stacks(env) == []
