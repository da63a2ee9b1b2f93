"""JobStore against SQLite and PostgreSQL: creation with idempotency keys, listing, and the
compare-and-set update the trainer replicas rely on."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelforge.v1.registry_pb2 import Job
from modelforge_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from modelforge_registry.app import Registry, open_registry
from modelforge_registry.store import JobRecord

QUEUED_AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def update(registry: Registry, job_id: str, changes: dict[str, object], expected: list[str] | None = None) -> Job:
    """The store's update as UpdateJob makes it: a Job carrying the changes (None: unset) and a
    mask naming each of them, known to Job or not."""
    known = {name: value for name, value in changes.items() if name in Job.DESCRIPTOR.fields_by_name}
    return registry.jobs.update(job_id, Job(**known), list(changes), expected or [])


def test_every_job_field_is_a_column_of_the_jobs_table() -> None:
    # The store reads and writes the proto Job column by column, by field name.
    assert set(Job.DESCRIPTOR.fields_by_name) <= set(JobRecord.__table__.columns.keys())


def test_create_then_get_round_trips_every_field(registry: Registry) -> None:
    job = Job(
        job_id="train_1",
        status="queued",
        idempotency_key="key-1",
        request={"model_name": "org/Tiny", "num_epochs": 2, "nested": {"a": [1, "b"]}},
        attempts=0,
        owner="alice",
        queued_at=QUEUED_AT,
    )
    created, was_created = registry.jobs.create(job)
    assert was_created
    assert created == job
    assert registry.jobs.get("train_1") == job


def test_create_fills_status_and_queued_time(registry: Registry) -> None:
    created, _ = registry.jobs.create(Job(job_id="j", status=""))
    assert created.status == "queued"
    assert created.HasField("queued_at")
    assert abs(created.queued_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=5)
    assert (created.HasField("started_at"), created.HasField("finished_at"), created.idempotency_key) == (
        False,
        False,
        "",
    )


def test_a_taken_idempotency_key_returns_the_existing_job(registry: Registry) -> None:
    first, _ = registry.jobs.create(Job(job_id="a", idempotency_key="k", request={"x": 1}))
    again, created = registry.jobs.create(Job(job_id="b", idempotency_key="k", request={"x": 2}))
    assert not created
    assert again == first
    with pytest.raises(NotFound, match=r"^Job b not found$"):
        registry.jobs.get("b")
    # Jobs without a key never collide on it.
    registry.jobs.create(Job(job_id="c"))
    registry.jobs.create(Job(job_id="d"))


def test_a_duplicate_job_id_already_exists(registry: Registry) -> None:
    registry.jobs.create(Job(job_id="a"))
    with pytest.raises(AlreadyExists, match=r"^Job a already exists$"):
        registry.jobs.create(Job(job_id="a", idempotency_key="new"))


def test_concurrent_creates_with_one_key_make_one_job(registry: Registry) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(lambda n: registry.jobs.create(Job(job_id=f"job-{n}", idempotency_key="same")), range(6))
        )
    assert sum(created for _, created in results) == 1
    assert len({job.job_id for job, _ in results}) == 1
    assert registry.jobs.list().total == 1


@pytest.mark.parametrize(
    ("job", "field"),
    [
        (Job(job_id=""), "job_id"),
        (Job(job_id="j", status="done"), "status"),
        (Job(job_id="j" * 129), "job_id"),
        (Job(job_id="j", owner="a\x00b"), "owner"),
        (Job(job_id="j", error="bad\x00"), "error"),
        (Job(job_id="j", attempts=-1), "attempts"),
        (Job(job_id="j", progress=101.0), "progress"),
        (Job(job_id="j", progress=float("nan")), "progress"),
        (Job(job_id="j", last_seq=-5), "last_seq"),
    ],
)
def test_create_refuses_bad_values_naming_the_field(registry: Registry, job: Job, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        registry.jobs.create(job)
    assert [v.field for v in info.value.violations] == [field]
    assert registry.jobs.list().total == 0


def test_list_is_newest_first_filters_and_pages(registry: Registry) -> None:
    for number, status in enumerate(["queued", "running", "completed", "queued", "error"]):
        registry.jobs.create(
            Job(job_id=f"j{number}", status=status, queued_at=QUEUED_AT + timedelta(minutes=number))
        )
    # Same instant as j4: insertion order breaks the tie.
    registry.jobs.create(Job(job_id="j5", queued_at=QUEUED_AT + timedelta(minutes=4)))

    every = registry.jobs.list()
    assert [j.job_id for j in every.jobs] == ["j5", "j4", "j3", "j2", "j1", "j0"]
    assert every.total == 6
    queued = registry.jobs.list(["queued"])
    assert ([j.job_id for j in queued.jobs], queued.total) == (["j5", "j3", "j0"], 3)
    page = registry.jobs.list(["queued", "error"], limit=2, offset=1)
    assert ([j.job_id for j in page.jobs], page.total) == (["j4", "j3"], 4)
    assert registry.jobs.list(limit=2, offset=10).jobs == ()

    with pytest.raises(InvalidArgument) as info:
        registry.jobs.list(["finished"])
    assert [v.field for v in info.value.violations] == ["statuses"]
    with pytest.raises(InvalidArgument) as info:
        registry.jobs.list(limit=-1, offset=-1)
    assert [v.field for v in info.value.violations] == ["limit", "offset"]


def test_in_progress_first_lists_jobs_in_progress_before_the_others(registry: Registry) -> None:
    statuses = ["completed", "running", "error", "queued", "stopped", "registering", "completed"]
    for number, status in enumerate(statuses):
        registry.jobs.create(
            Job(job_id=f"j{number}", status=status, queued_at=QUEUED_AT + timedelta(minutes=number))
        )
    # Same instant as j5 (in progress) and as j6 (not): insertion order still breaks each tie.
    registry.jobs.create(Job(job_id="j7", status="queued", queued_at=QUEUED_AT + timedelta(minutes=5)))
    registry.jobs.create(Job(job_id="j8", status="stopped", queued_at=QUEUED_AT + timedelta(minutes=6)))

    every = registry.jobs.list(in_progress_first=True)
    assert [j.job_id for j in every.jobs] == ["j7", "j5", "j3", "j1", "j8", "j6", "j4", "j2", "j0"]
    assert every.total == 9
    # With a status filter too; without the flag, plain newest first.
    filtered = registry.jobs.list(["queued", "completed"], in_progress_first=True)
    assert ([j.job_id for j in filtered.jobs], filtered.total) == (["j7", "j3", "j6", "j0"], 4)
    assert [j.job_id for j in registry.jobs.list(["queued", "completed"]).jobs] == ["j6", "j7", "j3", "j0"]
    # One small page answers a status request: the newest job in progress...
    assert [j.job_id for j in registry.jobs.list(limit=1, in_progress_first=True).jobs] == ["j7"]
    assert [j.job_id for j in registry.jobs.list(limit=2, offset=3, in_progress_first=True).jobs] == ["j1", "j8"]
    # ...else the newest job, newer in progress or not.
    for job_id in ("j1", "j3", "j5", "j7"):
        update(registry, job_id, {"status": "completed"})
    assert [j.job_id for j in registry.jobs.list(limit=2, in_progress_first=True).jobs] == ["j8", "j6"]


def test_update_sets_only_the_named_fields(registry: Registry) -> None:
    registry.jobs.create(Job(job_id="j", request={"a": 1}, owner="alice", queued_at=QUEUED_AT))
    started = QUEUED_AT + timedelta(seconds=5)
    running = update(
        registry, "j", {"status": "running", "started_at": started, "replica": "r1", "attempts": 1}, ["queued"]
    )
    assert running == Job(
        job_id="j",
        status="running",
        request={"a": 1},
        owner="alice",
        queued_at=QUEUED_AT,
        started_at=started,
        replica="r1",
        attempts=1,
    )
    progressed = update(registry, "j", {"progress": 42.5, "last_seq": 17, "checkpoint": "ckpt/step-4"})
    assert (progressed.progress, progressed.last_seq, progressed.checkpoint, progressed.status) == (
        42.5,
        17,
        "ckpt/step-4",
        "running",
    )
    cleared = update(registry, "j", {"started_at": None, "replica": ""})
    assert (cleared.HasField("started_at"), cleared.replica) == (False, "")
    assert registry.jobs.get("j") == cleared
    # An empty change set only checks the expected status.
    assert update(registry, "j", {}, ["running"]) == cleared


def test_update_refuses_a_job_in_another_state(registry: Registry) -> None:
    registry.jobs.create(Job(job_id="j", status="completed"))
    with pytest.raises(FailedPrecondition, match=r"^Job j is completed, expected queued or running$"):
        update(registry, "j", {"status": "stopped"}, ["queued", "running"])
    assert registry.jobs.get("j").status == "completed"


@pytest.mark.parametrize(
    ("changes", "expected", "field"),
    [
        ({"colour": "red"}, [], "update_mask"),
        ({"job_id": "other"}, [], "update_mask"),
        ({"idempotency_key": "k2"}, [], "update_mask"),
        ({"status": "paused"}, [], "status"),
        ({"status": "running"}, ["waiting"], "expected_statuses"),
        ({"progress": -1.0}, [], "progress"),
        ({"queued_at": None}, [], "queued_at"),
    ],
)
def test_update_refuses_bad_requests_naming_the_field(
    registry: Registry, changes: dict[str, object], expected: list[str], field: str
) -> None:
    registry.jobs.create(Job(job_id="j"))
    before = registry.jobs.get("j")
    with pytest.raises(InvalidArgument) as info:
        update(registry, "j", changes, expected)
    assert [v.field for v in info.value.violations] == [field]
    assert registry.jobs.get("j") == before


def test_unknown_jobs_are_not_found(registry: Registry) -> None:
    with pytest.raises(NotFound, match=r"^Job nope not found$"):
        update(registry, "nope", {"status": "running"})
    with pytest.raises(NotFound):
        registry.jobs.get("a\x00b")
    with pytest.raises(InvalidArgument):
        registry.jobs.get("")


def test_two_replicas_claiming_one_job_exactly_one_wins(registry: Registry, database_url: str, data_dir: Path) -> None:
    """Two registry connections (as two trainer replicas' calls would arrive) race the queued ->
    running compare-and-set; a barrier releases them together, several rounds."""
    other = open_registry(data_dir, database_url, max_upload_bytes=1024, orphan_grace_s=3600)
    try:
        for round_number in range(5):
            job_id = f"race-{round_number}"
            registry.jobs.create(Job(job_id=job_id))
            barrier = threading.Barrier(2)

            def claim(store: Registry, replica: str, job_id: str = job_id, barrier: threading.Barrier = barrier) -> str:
                barrier.wait()
                try:
                    update(store, job_id, {"status": "running", "replica": replica}, ["queued"])
                except FailedPrecondition as exc:
                    assert exc.message == f"Job {job_id} is running, expected queued"
                    return "lost"
                return "won"

            with ThreadPoolExecutor(max_workers=2) as pool:
                outcomes = list(pool.map(claim, [registry, other], ["r1", "r2"]))
            assert sorted(outcomes) == ["lost", "won"]
            winner = ["r1", "r2"][outcomes.index("won")]
            assert registry.jobs.get(job_id).replica == winner
    finally:
        other.close()


def test_jobs_survive_reopening_the_registry(registry: Registry, database_url: str, data_dir: Path) -> None:
    created, _ = registry.jobs.create(Job(job_id="durable", request={"k": "v"}))
    registry.close()
    reopened = open_registry(data_dir, database_url, max_upload_bytes=1024, orphan_grace_s=3600)
    try:
        assert reopened.jobs.get("durable") == created
    finally:
        reopened.close()
