"""Reading jobs of record for a status request without a job id: the job in progress anywhere,
else the most recent one, in one registry call (ListJobs with the jobs in progress first)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from modelforge_trainer.convert import record_time
from modelforge_trainer.ports import JobRecord, JobStore

# Job states of record that hold a training slot somewhere (the seed start's 409).
IN_PROGRESS = ("queued", "running", "registering")
# Rows of that one ListJobs: the newest job in progress comes first unless this replica saw it end
# (its final record may still be on its way); a few rows leave room for those, and a further page
# is read only when a whole page was such jobs.
STATUS_LOOKUP_PAGE = 4
_OLDEST = datetime.min.replace(tzinfo=UTC)


async def current_of_record(store: JobStore, ended_here: Callable[[str], bool]) -> JobRecord | None:
    """The newest job of record in progress, less those ended_here (job id) says this replica saw
    end, else the newest job of record; None when there is none."""
    newest_ended_here: JobRecord | None = None
    offset = 0
    while True:
        page, _ = await store.list_jobs((), STATUS_LOOKUP_PAGE, offset, in_progress_first=True)
        for record in page:
            if record.status not in IN_PROGRESS:
                # Every job in progress came before it: the newest job is this one or the newest
                # of those (on a tie of queued_at the one in progress, as new as this one).
                return record if newest_ended_here is None else _newer(newest_ended_here, record)
            if not ended_here(record.job_id):
                return record
            newest_ended_here = newest_ended_here or record
        if len(page) < STATUS_LOOKUP_PAGE:
            return newest_ended_here
        offset += STATUS_LOOKUP_PAGE


def _newer(first: JobRecord, second: JobRecord) -> JobRecord:
    """The later queued of two jobs of record, first on a tie (an unset queued_at is the oldest)."""
    first_at, second_at = (record_time(record, "queued_at") or _OLDEST for record in (first, second))
    return second if second_at > first_at else first
