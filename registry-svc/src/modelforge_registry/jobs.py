"""Training jobs of record. The trainer replicas share them here: who runs a job is settled by a
compare-and-set on its status (UpdateJob with expected statuses), done in one transaction that
locks the row, so two replicas never both move a job from queued to running."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC
from typing import Any, Literal

from google.protobuf import json_format
from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelforge.v1 import registry_pb2
from modelforge_common.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from modelforge_registry.domain import IN_PROGRESS_JOB_STATUSES, JOB_STATUSES, JobPage
from modelforge_registry.store import Database, JobRecord, as_utc, check_text, utc_now

log = logging.getLogger(__name__)

# The proto Job is the record: each of its fields is the jobs column of the same name.
JOB_FIELDS = tuple(registry_pb2.Job.DESCRIPTOR.fields_by_name)
# Timestamps (None in a column when unset) and the JSON object; every other field is a plain value.
_TIME_FIELDS: tuple[Literal["queued_at", "started_at", "finished_at"], ...] = ("queued_at", "started_at", "finished_at")
# Identity: set once at creation.
IMMUTABLE_FIELDS = ("job_id", "idempotency_key")
_TEXT_FIELDS = ("job_id", "status", "idempotency_key", "model_id", "owner", "replica", "checkpoint")
_MAX_INT32 = 2**31 - 1
_MAX_INT64 = 2**63 - 1


class JobStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def create(self, given: registry_pb2.Job) -> tuple[registry_pb2.Job, bool]:
        """Stores a new job; returns it and True. When its idempotency key is taken, returns the
        job holding the key and False instead (nothing is created). An empty status is queued,
        an unset queued_at now."""
        if not given.job_id:
            raise InvalidArgument("A job id is required", [FieldViolation("job_id", "must not be empty")])
        job = registry_pb2.Job()
        job.CopyFrom(given)
        job.status = job.status or "queued"
        if not job.HasField("queued_at"):
            job.queued_at.FromDatetime(utc_now())
        values = _values_of(job, JOB_FIELDS)
        _check_values(values)
        try:
            with self.db.transaction() as session:
                # Creations take turns, so a retried request finds the first one's row.
                self.db.serialize(session, "jobs.create")
                existing = self._by_key(session, job.idempotency_key)
                if existing is not None:
                    return _job_of(existing), False
                if self._by_id(session, job.job_id) is not None:
                    raise AlreadyExists(f"Job {job.job_id} already exists")
                record = JobRecord(**_columns_of(values))
                session.add(record)
                session.flush()
                created = _job_of(record)
        except IntegrityError:
            # Another writer that does not take turns (none today) got there first.
            with self.db.transaction() as session:
                existing = self._by_key(session, job.idempotency_key)
                if existing is not None:
                    return _job_of(existing), False
            raise AlreadyExists(f"Job {job.job_id} already exists") from None
        log.info("job %s created (%s)", created.job_id, created.status)
        return created, True

    def get(self, job_id: str) -> registry_pb2.Job:
        with self.db.transaction() as session:
            return _job_of(self._existing(session, job_id))

    def list(
        self, statuses: Collection[str] = (), limit: int = 0, offset: int = 0, *, in_progress_first: bool = False
    ) -> JobPage:
        """Newest first; no statuses means all; limit 0 means no limit. With in_progress_first the
        jobs in progress come first (each group newest first), so the first rows of one page are
        the newest job in progress, else the newest job."""
        _check_statuses(statuses, "statuses")
        problems = [
            FieldViolation(name, "must not be negative")
            for name, value in (("limit", limit), ("offset", offset))
            if value < 0
        ]
        if problems:
            raise InvalidArgument(
                "Invalid job listing: " + "; ".join(f"{p.field} {p.description}" for p in problems), problems
            )
        matching = select(JobRecord)
        if statuses:
            matching = matching.where(JobRecord.status.in_(list(statuses)))
        newest_first = (JobRecord.queued_at.desc(), JobRecord.id.desc())
        if in_progress_first:
            # A CASE over the status: plain SQL that SQLite and PostgreSQL order alike.
            in_progress = case((JobRecord.status.in_(IN_PROGRESS_JOB_STATUSES), 0), else_=1)
            page = matching.order_by(in_progress, *newest_first).offset(offset)
        else:
            page = matching.order_by(*newest_first).offset(offset)
        if limit:
            page = page.limit(limit)
        with self.db.transaction() as session:
            total = session.scalar(select(func.count()).select_from(matching.subquery())) or 0
            return JobPage(jobs=tuple(_job_of(record) for record in session.scalars(page)), total=total)

    def update(
        self, job_id: str, job: registry_pb2.Job, paths: Collection[str], expected_statuses: Collection[str] = ()
    ) -> registry_pb2.Job:
        """Sets the fields named in paths (an update mask) to their values in job; an unset
        timestamp clears it. With expected_statuses, only while the stored status is one of them
        (checked and changed in one transaction holding the row lock), else FailedPrecondition."""
        unknown = sorted(set(paths) - set(JOB_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"Unknown job fields in update_mask: {', '.join(unknown)}",
                [FieldViolation("update_mask", f"unknown field {name}") for name in unknown],
            )
        fixed = [name for name in IMMUTABLE_FIELDS if name in paths]
        if fixed:
            raise InvalidArgument(
                f"Job fields that cannot change: {', '.join(fixed)}",
                [FieldViolation("update_mask", f"{name} is set once, at creation") for name in fixed],
            )
        _check_statuses(expected_statuses, "expected_statuses")
        changes = _values_of(job, paths)
        _check_values(changes)
        if "queued_at" in changes and changes["queued_at"] is None:
            raise InvalidArgument("A job's queued_at cannot be cleared", [FieldViolation("queued_at", "must be set")])
        with self.db.transaction() as session:
            record = self._existing(session, job_id, for_update=True)
            if expected_statuses and record.status not in expected_statuses:
                raise FailedPrecondition(f"Job {job_id} is {record.status}, expected {' or '.join(expected_statuses)}")
            for name, value in _columns_of(changes).items():
                setattr(record, name, value)
            session.flush()
            updated = _job_of(record)
        log.info("job %s updated: %s", job_id, ", ".join(sorted(changes)) or "nothing")
        return updated

    # -- lookups ------------------------------------------------------------------------------

    def _existing(self, session: Session, job_id: str, *, for_update: bool = False) -> JobRecord:
        if not job_id:
            raise InvalidArgument("A job id is required", [FieldViolation("job_id", "must not be empty")])
        record = self._by_id(session, job_id, for_update=for_update)
        if record is None:
            raise NotFound(f"Job {job_id} not found")
        return record

    @staticmethod
    def _by_id(session: Session, job_id: str, *, for_update: bool = False) -> JobRecord | None:
        if "\x00" in job_id:
            return None
        query = select(JobRecord).where(JobRecord.job_id == job_id)
        if for_update:
            query = query.with_for_update()
        return session.scalar(query)

    @staticmethod
    def _by_key(session: Session, key: str) -> JobRecord | None:
        if not key:
            return None
        return session.scalar(select(JobRecord).where(JobRecord.idempotency_key == key))


def _check_statuses(statuses: Collection[str], field: str) -> None:
    unknown = [status for status in statuses if status not in JOB_STATUSES]
    if unknown:
        raise InvalidArgument(
            f"Unknown job status: {', '.join(unknown)}",
            [FieldViolation(field, f"must be among {', '.join(JOB_STATUSES)}")],
        )


def _check_values(values: Mapping[str, Any]) -> None:
    """Refuses what the columns cannot hold or what makes no sense, naming the field."""
    if "status" in values:
        _check_statuses([values["status"]], "status")
    check_text(JobRecord, "job", {name: values[name] for name in _TEXT_FIELDS if name in values})
    if "\x00" in values.get("error", ""):
        raise InvalidArgument(
            "Invalid job: error must not contain NUL characters",
            [FieldViolation("error", "must not contain NUL characters")],
        )
    problems = []
    if "attempts" in values and not 0 <= values["attempts"] <= _MAX_INT32:
        problems.append(FieldViolation("attempts", "must not be negative"))
    if "last_seq" in values and not 0 <= values["last_seq"] <= _MAX_INT64:
        problems.append(FieldViolation("last_seq", "must not be negative"))
    if "progress" in values and not (math.isfinite(values["progress"]) and 0 <= values["progress"] <= 100):
        problems.append(FieldViolation("progress", "must be between 0 and 100"))
    if problems:
        raise InvalidArgument("Invalid job: " + "; ".join(f"{p.field} {p.description}" for p in problems), problems)


def _columns_of(values: Mapping[str, Any]) -> dict[str, Any]:
    columns = dict(values)
    if "request" in columns:
        columns["request"] = dict(columns["request"])
    if "idempotency_key" in columns:
        columns["idempotency_key"] = columns["idempotency_key"] or None
    return columns


def _values_of(job: registry_pb2.Job, names: Iterable[str]) -> dict[str, Any]:
    """The named fields as column values: a JSON object for request, a UTC datetime or None for a
    timestamp, the value itself otherwise."""
    wanted = set(names)
    values = {name: getattr(job, name) for name in wanted - {"request", *_TIME_FIELDS}}
    if "request" in wanted:
        values["request"] = json_format.MessageToDict(job.request)
    for name in _TIME_FIELDS:
        if name in wanted:
            values[name] = getattr(job, name).ToDatetime(tzinfo=UTC) if job.HasField(name) else None
    return values


def _job_of(record: JobRecord) -> registry_pb2.Job:
    job = registry_pb2.Job()
    for name in JOB_FIELDS:
        value = getattr(record, name)
        if value is None:
            continue  # a time not reached, or no idempotency key: the field stays unset
        if name == "request":
            job.request.update(value)
        elif name in _TIME_FIELDS:
            getattr(job, name).FromDatetime(as_utc(value))
        else:
            setattr(job, name, value)
    return job
