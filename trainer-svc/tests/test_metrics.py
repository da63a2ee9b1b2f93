"""trainer-svc's metrics: step times from progress reports, jobs by state and finished jobs counted."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelforge_common.metrics import REGISTRY
from modelforge_trainer.jobs import JobStatus
from modelforge_trainer.metrics import StepTimer, job_finished, jobs_collector
from modelforge_training.protocol import Progress


def progress(step: int) -> Progress:
    return Progress(step=step, total_steps=10, epoch=0.0, current_epoch=1, total_epochs=1, progress=step * 10.0)


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_step_times_are_the_time_between_reports_over_the_steps_between() -> None:
    now = [100.0]
    timer = StepTimer(clock=lambda: now[0])
    sum_before = samples()[("modelforge_trainer_step_seconds_sum", ())]
    assert timer.report(progress(0)) is None  # training begins: model loading is no step
    now[0] = 103.0
    assert timer.report(progress(1)) is None  # from step 0: includes the first batch's setup
    now[0] = 104.0
    assert timer.report(progress(3)) == 0.5
    now[0] = 104.5
    assert timer.report(progress(3)) is None  # the same step again, with its loss
    now[0] = 105.0
    assert timer.report(progress(4)) == 1.0
    assert samples()[("modelforge_trainer_step_seconds_sum", ())] - sum_before == 1.5


def test_jobs_by_state_queue_depth_and_gpu_memory_are_read_at_scrape_time() -> None:
    class Held:
        def __init__(self, status: JobStatus) -> None:
            self.status = status

    held = [Held(JobStatus.RUNNING), Held(JobStatus.COMPLETED), Held(JobStatus.COMPLETED)]
    jobs_collector().watch(lambda: held, lambda: 4, lambda: None)  # type: ignore[arg-type,return-value]
    finished_before = samples().get(("modelforge_trainer_jobs_finished_total", (("state", "completed"),)), 0.0)
    job_finished(JobStatus.COMPLETED)

    found = samples()
    assert found[("modelforge_trainer_jobs", (("state", "running"),))] == 1
    assert found[("modelforge_trainer_jobs", (("state", "completed"),))] == 2
    assert found[("modelforge_trainer_jobs", (("state", "registering"),))] == 0
    assert found[("modelforge_trainer_queue_depth", ())] == 4
    assert found[("modelforge_trainer_jobs_finished_total", (("state", "completed"),))] == finished_before + 1
    assert not [key for key in found if key[0] == "modelforge_trainer_gpu_memory_bytes"]  # no GPU here

    jobs_collector().watch(lambda: [], lambda: 0, lambda: 3 * 1024**3)
    assert samples()[("modelforge_trainer_gpu_memory_bytes", ())] == 3 * 1024**3
