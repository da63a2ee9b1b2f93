"""The installed `modelforge` command as a real process: exit codes and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("MODELFORGE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "modelforge_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_console_script_is_declared() -> None:
    (script,) = entry_points(group="console_scripts", name="modelforge")
    assert script.value == "modelforge_cli.main:app"


def test_unreachable_is_one_line_and_exit_1(closed_url: str) -> None:
    result = run("--url", closed_url, "status")
    assert result.returncode == 1
    assert result.stderr == f"error: cannot reach ModelForge at {closed_url} (is it running? try `make up`)\n"
    assert result.stdout == ""


def test_usage_error_is_exit_2() -> None:
    result = run("models", "frobnicate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_env_configures_url_and_models_list_json(gateway: Any) -> None:
    env = {**os.environ, "MODELFORGE_URL": gateway.url, "MODELFORGE_API_KEY": "k1"}
    script = Path(sys.executable).with_name("modelforge")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "modelforge_cli"]
    result = subprocess.run(
        [*command, "models", "list", "--json"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["models"][0]["id"] == 1
    assert gateway.authorization[-1] == "Bearer k1"
