"""The dead-letter stream: jobs that failed for good after their attempts, kept for an operator.

A dead letter records the job, the reason and how many deliveries were started. Retrying one
gives the job a fresh stream entry and a fresh set of attempts (and takes back the failure
it was counted as); its original must still be stored. Purging forgets the dead letters
(the jobs stay ``failed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from imgstream.connection import load_script
from imgstream.job_counters import outcome_field
from imgstream.jobs import (
    ENTRY_OUTPUT_FIELDS,
    ORIGINAL_NAME_FIELD,
    ORIGINAL_SHA256_FIELD,
    StreamEntry,
    is_valid_job_id,
    lane_of,
    pairs,
    queued_state,
    utc_now,
)
from imgstream.keys import Keys, partition_of
from imgstream.lifecycle import JobStatus


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    job_id: str
    reason: str
    deliveries: int
    failed_at: str
    operations: str
    format: str


class DeadLetters:
    """The dead-letter streams of a deployment's ``partitions`` (each with its jobs); a
    letter is named by its entry id, looked up in each partition's stream (the first that
    holds it answers). With ``lanes``, a retried job goes back to the lane its steps name."""

    def __init__(
        self, redis: Redis, keys: Keys, *, partitions: int = 1, per_operation: bool = False
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.partitions = partitions
        self.per_operation = per_operation
        self._requeue = load_script(redis, "requeue")

    @property
    def _streams(self) -> list[str]:
        return [self.keys.partition(part).dead for part in range(self.partitions)]

    async def list(self, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters (of each partition, then the oldest of those)."""
        letters: list[DeadLetter] = []
        for stream in self._streams:
            entries: Any = await self.redis.xrange(stream, count=count)
            letters += decode_dead_letters(entries)
        return sorted(letters, key=lambda letter: _entry_order(letter.entry_id))[:count]

    async def count(self) -> int:
        return sum([int(await self.redis.xlen(stream)) for stream in self._streams])

    async def retry(self, entry_id: str) -> str | None:
        """Queue the job again (in its partition, and its lane); returns its new stream entry
        id, None if no such dead letter."""
        for part in range(self.partitions):
            entries: Any = await self.redis.xrange(
                self.keys.partition(part).dead, entry_id, entry_id
            )
            if entries:
                return await self._retry(_dead_letter(*entries[0]), self.keys.partition(part))
        return None

    async def _retry(self, letter: DeadLetter, keys: Keys) -> str | None:
        if not is_valid_job_id(letter.job_id) or partition_of(letter.job_id) != keys.part:
            return None
        # The dead letter names the steps and format; the other output options (quality,
        # max_bytes, strip) are read from the job's record, which keeps them while it lives.
        kept: Any = await self.redis.hmget(
            self.keys.job(letter.job_id),
            [*ENTRY_OUTPUT_FIELDS, ORIGINAL_SHA256_FIELD, ORIGINAL_NAME_FIELD],
        )
        *given, digest, name = kept
        named = zip(ENTRY_OUTPUT_FIELDS, given, strict=True)
        options = tuple((field, value) for field, value in named if value)
        entry = StreamEntry(
            letter.job_id, letter.operations, letter.format, options, digest or "", name or ""
        )
        entry_fields = entry.to_fields()
        lane = lane_of(letter.operations) if self.per_operation else ""
        reply = await self._requeue(
            keys=[keys.dead, keys.lane(lane), keys.job(letter.job_id), keys.metrics],
            args=[
                letter.entry_id,
                outcome_field(JobStatus.FAILED.value, letter.operations),
                self.keys.channel(letter.job_id),
                JobStatus.QUEUED.value,
                utc_now(),
                len(entry_fields),
                *pairs(entry_fields),
                *pairs(queued_state(entry)),
            ],
        )
        return cast(str | None, reply or None)

    async def retry_all(self) -> int:
        retried = 0
        while letters := await self.list(100):
            for letter in letters:
                if await self.retry(letter.entry_id) is not None:
                    retried += 1
                else:
                    for stream in self._streams:
                        await self.redis.xdel(stream, letter.entry_id)
        return retried

    async def purge(self) -> int:
        """Forget every dead letter; returns how many there were."""
        count = await self.count()
        for stream in self._streams:
            await self.redis.delete(stream)
        return count


def decode_dead_letters(entries: Any) -> list[DeadLetter]:
    """Dead letters from an ``XRANGE``/``XREVRANGE`` reply."""
    return [_dead_letter(entry_id, fields) for entry_id, fields in entries]


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, sequence = entry_id.partition("-")
    return (int(ms or 0), int(sequence or 0))


def _dead_letter(entry_id: str, fields: dict[str, str]) -> DeadLetter:
    return DeadLetter(
        entry_id=entry_id,
        job_id=fields.get("job", ""),
        reason=fields.get("reason", ""),
        deliveries=int(fields.get("deliveries") or 0),
        failed_at=fields.get("failed_at", ""),
        operations=fields.get("operations", ""),
        format=fields.get("format", ""),
    )
