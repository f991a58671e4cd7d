"""A batch as it is kept in Redis, and what its jobs' states make of it: pure, no I/O.

A batch is a list of ordinary jobs made by one request; it holds no state of its own besides
who made it, when, and which jobs (in the order their images were sent). Its status is
derived from theirs every time it is read, so it can never disagree with them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from imgstream.jobs import BatchStatus, JobRecord, WireError, is_valid_job_id


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: str
    owner: str
    """The fingerprint of the API key that made it ("" while access control is off)."""
    created_at: str
    job_ids: tuple[str, ...]

    def to_fields(self) -> dict[str, str]:
        return {"owner": self.owner, "created_at": self.created_at, "jobs": ",".join(self.job_ids)}

    @classmethod
    def from_hash(cls, batch_id: str, fields: Mapping[str, str]) -> BatchRecord:
        job_ids = tuple(fields.get("jobs", "").split(","))
        if not all(is_valid_job_id(job_id) for job_id in job_ids):
            raise WireError(f"batch {batch_id}: its jobs field is not a list of job ids")
        return cls(batch_id, fields.get("owner", ""), fields.get("created_at", ""), job_ids)


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """How many of a batch's jobs are in each state; ``expired`` ones ended and are gone."""

    queued: int = 0
    processing: int = 0
    done: int = 0
    failed: int = 0
    expired: int = 0

    @classmethod
    def of(cls, jobs: Iterable[JobRecord | None]) -> BatchCounts:
        counts = Counter(job.status.value if job is not None else "expired" for job in jobs)
        return cls(**counts)

    @property
    def status(self) -> BatchStatus:
        if self.queued or self.processing:
            return BatchStatus.PROCESSING
        if not self.failed and not self.expired:
            return BatchStatus.DONE
        return BatchStatus.PARTIAL if self.done else BatchStatus.FAILED


def last_finished(jobs: Iterable[JobRecord | None]) -> datetime | None:
    """When the last of ``jobs`` ended, once they all have (None while one has not)."""
    moments = []
    for job in jobs:
        if job is None:
            continue
        if not job.status.is_final or not job.finished_at:
            return None
        moments.append(datetime.fromisoformat(job.finished_at))
    return max(moments, default=None)


def seconds_to_keep(jobs: Sequence[JobRecord | None], result_ttl: int, now: float) -> int:
    """How long a batch must still live: until the last of its jobs' records expires
    (``result_ttl`` after the last one ended), or ``result_ttl`` more while one has not."""
    ended = last_finished(jobs)
    if ended is None:
        return result_ttl
    return max(1, int(ended.timestamp() + result_ttl - now) + 1)
