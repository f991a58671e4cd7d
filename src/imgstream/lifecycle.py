"""The named states of a job and a batch, and the named answers of the Lua scripts.

Both sides of the wire speak these names: Python passes the status names to the scripts and
reads their answers as these enums, so no bare string or number stands for a state
(docs/wire-format.md). No I/O here; ``jobs`` holds the records that carry these states.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class JobStatus(StrEnum):
    """A job's lifecycle: ``queued`` → ``processing`` → ``done`` or ``failed``."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED)


FINAL_STATUSES = tuple(status for status in JobStatus if status.is_final)
"""The statuses a job ends in, in the order the scripts receive them (done, failed)."""


class BatchStatus(StrEnum):
    """A batch's state, from its jobs': ``processing`` while any has not ended, then
    ``done`` (every job done), ``failed`` (every job failed) or ``partial`` (some of each)."""

    PROCESSING = "processing"
    DONE = "done"
    PARTIAL = "partial"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self is not BatchStatus.PROCESSING


class Enqueued(IntEnum):
    """What ``lua/enqueue.lua`` answers first: the job was accepted, or why not."""

    ACCEPTED = 1
    BACKLOG_FULL = 0
    JOB_EXISTS = -1
    REPLAYED = 2
    """The idempotency key names a job already: nothing was created; its id and request
    fingerprint come back."""


class StartRefused(IntEnum):
    """What ``lua/start.lua`` answers instead of an attempt number (which is 1 or more)."""

    ALREADY_ENDED = -1
    """A duplicate delivery of a job that has ended: discard the entry."""
    EXHAUSTED = -2
    """Started max-attempts times without ending (a poison entry): bury it."""


class Recorded(IntEnum):
    """What ``lua/finish.lua`` answers."""

    RECORDED = 1
    LEASE_LOST = 0
    """The lease was taken over, or the job had already ended: nothing was written."""


class Pinned(IntEnum):
    """What ``lua/pin.lua`` answers first."""

    PINNED = 1
    """The job is recorded as a user of the shared file (and the cache entry follows)."""
    REFUSED = 0
    """The janitor is deleting the file, or (a cache lookup) no entry: store per job."""
