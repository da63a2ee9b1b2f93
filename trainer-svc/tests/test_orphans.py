"""A new trainer ends the workers a dead trainer of its data dir left behind, and only those: found by
their worker.json (start times rule out a reused pid) or by the markers in their environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelforge_trainer.orphans import WorkerPidFile, end_left_behind_workers, process_start_time
from modelforge_training.lifeline import DATA_DIR_ENV, PARENT_ENV, parent_marker

pytestmark = pytest.mark.timeout(60)

# Ignores SIGTERM, as the orphan in the issue did.
STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(600)"
)


def dead_trainer() -> tuple[int, float]:
    """The pid and start time of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    started = process_start_time(process.pid)
    process.wait()
    return process.pid, started


def spawn_worker(env_markers: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, **env_markers}
    worker = subprocess.Popen([sys.executable, "-c", STUBBORN], env=env, stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stdout.readline().strip() == "up"
    return worker


@pytest.fixture
def workers() -> list[subprocess.Popen[str]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for worker in started:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_workers_of_a_dead_trainer_are_ended_and_live_trainers_workers_kept(
    tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    data_dir = tmp_path / "data"
    gone = parent_marker(*dead_trainer())
    alive = parent_marker(os.getpid(), process_start_time(os.getpid()))
    orphan = spawn_worker({DATA_DIR_ENV: str(data_dir), PARENT_ENV: gone})
    sibling = spawn_worker({DATA_DIR_ENV: str(data_dir), PARENT_ENV: alive})  # another replica's
    elsewhere = spawn_worker({DATA_DIR_ENV: str(tmp_path / "other"), PARENT_ENV: gone})  # another data dir
    workers.extend([orphan, sibling, elsewhere])

    assert end_left_behind_workers(data_dir) == [orphan.pid]
    orphan.wait(timeout=10)  # ended (its status may already have been collected by the sweep's wait)
    assert sibling.poll() is None and elsewhere.poll() is None


def test_a_worker_without_markers_is_found_by_its_worker_file(
    tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    data_dir = tmp_path / "data"
    worker = spawn_worker({})
    workers.append(worker)
    trainer_pid, trainer_started = dead_trainer()
    job_dir = data_dir / "jobs" / "train_1"
    job_dir.mkdir(parents=True)
    # A pid file whose start time does not match names another process that reuses the pid.
    (data_dir / "jobs" / "train_0").mkdir()
    WorkerPidFile(worker.pid, process_start_time(worker.pid) - 100, trainer_pid, trainer_started).write(
        data_dir / "jobs" / "train_0" / "worker.json"
    )
    assert end_left_behind_workers(data_dir) == []
    assert worker.poll() is None

    WorkerPidFile(worker.pid, process_start_time(worker.pid), trainer_pid, trainer_started).write(
        job_dir / "worker.json"
    )
    assert end_left_behind_workers(data_dir) == [worker.pid]
    worker.wait(timeout=10)
