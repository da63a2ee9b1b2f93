"""trainer-svc's Prometheus metrics, on the process registry of modelforge_common.metrics (served on
the service's metrics port with the gRPC call metrics):

- modelforge_trainer_jobs{state}: jobs this replica holds, by state (read at scrape time);
- modelforge_trainer_jobs_finished_total{state}: jobs that ended here, by final state;
- modelforge_trainer_queue_depth: jobs waiting in the queue (the JetStream consumer's pending
  messages with durable jobs, this replica's queued jobs without);
- modelforge_trainer_step_seconds: time per optimizer step, from the workers' progress reports;
- modelforge_trainer_gpu_memory_bytes: CUDA memory the running workers hold (GPU nodes only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelforge_common import metrics as common_metrics
from modelforge_trainer.jobs import Job, JobStatus
from modelforge_training.protocol import Progress

# From a tiny CPU model's few milliseconds to a large model's minute-long step.
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

STEP_SECONDS = common_metrics.histogram(
    "modelforge_trainer_step_seconds", "Seconds per optimizer step, from the workers' progress reports",
    buckets=STEP_BUCKETS,
)
JOBS_FINISHED = common_metrics.counter(
    "modelforge_trainer_jobs_finished", "Training jobs that ended on this replica, by final state", ("state",)
)


class JobsCollector(Collector):
    """Jobs by state, queue depth and GPU memory, read from their sources at each scrape. One per
    process; build_app points it at the newest service (tests build several)."""

    def __init__(self) -> None:
        self._jobs: Callable[[], Iterable[Job]] = list
        self._queue_depth: Callable[[], int] = lambda: 0
        self._gpu_memory: Callable[[], int | None] = lambda: None

    def watch(
        self,
        jobs: Callable[[], Iterable[Job]],
        queue_depth: Callable[[], int],
        gpu_memory: Callable[[], int | None],
    ) -> None:
        self._jobs, self._queue_depth, self._gpu_memory = jobs, queue_depth, gpu_memory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily("modelforge_trainer_jobs", "Training jobs this replica holds, by state",
                                     labels=["state"])
        counts = dict.fromkeys((status.value for status in JobStatus), 0)
        for job in self._jobs():
            counts[job.status.value] += 1
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily("modelforge_trainer_queue_depth", "Training jobs waiting in the queue",
                                value=self._queue_depth())
        memory = self._gpu_memory()
        if memory is not None:
            yield GaugeMetricFamily("modelforge_trainer_gpu_memory_bytes",
                                    "CUDA memory held by this replica's running workers", value=memory)


_collector_lock = threading.Lock()
_collector: JobsCollector | None = None


def jobs_collector() -> JobsCollector:
    global _collector
    with _collector_lock:
        if _collector is None:
            _collector = JobsCollector()
            common_metrics.REGISTRY.register(_collector)
        return _collector


class StepTimer:
    """Turns one worker's progress reports into step times: the time between two reports over the
    steps between them (reports before the first step, or of a new phase, only set the mark)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._mark: tuple[int, float] | None = None

    def report(self, progress: Progress) -> float | None:
        now = self._clock()
        if self._mark is not None and progress.step == self._mark[0]:
            return None  # the same step reported again (with its loss)
        mark, self._mark = self._mark, (progress.step, now)
        if mark is None or progress.step < mark[0] or mark[0] == 0:
            return None
        seconds = (now - mark[1]) / (progress.step - mark[0])
        STEP_SECONDS.observe(seconds)
        return seconds


def job_finished(state: JobStatus) -> None:
    JOBS_FINISHED.labels(state.value).inc()
