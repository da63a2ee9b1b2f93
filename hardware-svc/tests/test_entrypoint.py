"""`python -m modelforge_hardware`: settings from the environment, binds hardware_addr's port,
serves health, drains on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from modelforge.v1 import hardware_pb2, hardware_pb2_grpc
from modelforge_common.testing import free_port, wait_for_grpc_health
from modelforge_hardware.settings import HardwareSettings


def test_settings_from_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELFORGE_HUB_TIMEOUT_S", "1.5")
    monkeypatch.setenv("MODELFORGE_FAKE_HARDWARE", "rtx3070")
    monkeypatch.setenv("MODELFORGE_HARDWARE_ADDR", "10.0.0.5:6000")
    settings = HardwareSettings()
    assert (settings.hub_timeout_s, settings.fake_hardware, settings.hardware_addr) == (1.5, "rtx3070", "10.0.0.5:6000")


def test_module_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MODELFORGE_HARDWARE_ADDR": f"127.0.0.1:{port}",
        "MODELFORGE_DATA_DIR": str(tmp_path / "data"),
        "MODELFORGE_FAKE_HARDWARE": "rtx3070",
        "MODELFORGE_SHUTDOWN_GRACE_S": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "modelforge_hardware"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_grpc_health(f"127.0.0.1:{port}", timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = hardware_pb2_grpc.HardwareServiceStub(channel).GetHardware(
                hardware_pb2.GetHardwareRequest(), timeout=10
            )
        assert reply.hardware.profile == "mid_range"
        assert reply.hardware.gpus[0].name == "NVIDIA GeForce RTX 3070"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
