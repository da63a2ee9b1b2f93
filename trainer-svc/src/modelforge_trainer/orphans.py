"""Workers left behind by a trainer-svc that died: found and ended by the next one to start.

Each worker's file jobs/<job_id>/worker.json records the worker's pid and start time and the
trainer's; the start times tell a live worker from an unrelated process that reuses its pid. Workers
also carry the data dir and their trainer in their environment (modelforge_training/lifeline.py), so one whose pid
file was never written is found by a scan of the process table. A worker counts as left behind only
when the trainer that started it is gone: replicas sharing a data dir leave each other's workers alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from modelforge_training.lifeline import DATA_DIR_ENV, PARENT_ENV, parse_parent_marker

log = logging.getLogger(__name__)

# psutil's create_time is a float from /proc's start ticks: equal for the same process, to rounding.
_SAME_START_S = 0.05


@dataclass(frozen=True)
class WorkerPidFile:
    pid: int
    start_time: float
    trainer_pid: int
    trainer_start_time: float

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> WorkerPidFile | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(int(data["pid"]), float(data["start_time"]), int(data["trainer_pid"]),
                       float(data["trainer_start_time"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def process_start_time(pid: int) -> float:
    return psutil.Process(pid).create_time()


def is_alive(pid: int, start_time: float) -> bool:
    """True when pid is the process that started at start_time (not a later one reusing the pid)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - start_time) < _SAME_START_S
    except (psutil.Error, ValueError):
        return False


def _left_behind_by_pid_files(data_dir: Path) -> dict[int, psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for pid_file in data_dir.glob("jobs/*/worker.json"):
        record = WorkerPidFile.read(pid_file)
        if record is None or record.pid == os.getpid():
            continue
        if is_alive(record.pid, record.start_time) and not is_alive(record.trainer_pid, record.trainer_start_time):
            with contextlib.suppress(psutil.Error):
                found[record.pid] = psutil.Process(record.pid)
    return found


def _left_behind_by_environment(data_dir: Path) -> dict[int, psutil.Process]:
    found: dict[int, psutil.Process] = {}
    wanted = str(data_dir)
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            environ = process.environ()
        except (psutil.Error, OSError):
            continue  # another user's process, or gone meanwhile
        if environ.get(DATA_DIR_ENV) != wanted:
            continue
        parent = parse_parent_marker(environ.get(PARENT_ENV, ""))
        if parent is None or not is_alive(*parent):
            found[process.pid] = process
    return found


def end_left_behind_workers(data_dir: Path, wait_s: float = 5.0) -> list[int]:
    """Kills every worker of this data dir whose trainer is gone (its process group too) and waits
    up to wait_s for them to exit; returns their pids."""
    found = {**_left_behind_by_pid_files(data_dir), **_left_behind_by_environment(data_dir)}
    for pid, process in found.items():
        log.warning("ending worker process %d left behind by a trainer-svc that is gone", pid)
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                process.kill()
        except (OSError, psutil.Error):
            continue
    _, still_alive = psutil.wait_procs(list(found.values()), timeout=wait_s)
    for process in still_alive:
        log.error("worker process %d did not exit after SIGKILL", process.pid)
    return sorted(found)
