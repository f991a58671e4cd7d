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
from imgstream.jobs import (
    ENTRY_OUTPUT_FIELDS,
    ORIGINAL_NAME_FIELD,
    ORIGINAL_SHA256_FIELD,
    JobStatus,
    StreamEntry,
    is_valid_job_id,
    pairs,
    queued_state,
    utc_now,
)
from imgstream.metrics import outcome_field
from imgstream.queue import Keys


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
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._requeue = load_script(redis, "requeue")

    async def list(self, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters."""
        entries: Any = await self.redis.xrange(self.keys.dead, count=count)
        return [_dead_letter(entry_id, fields) for entry_id, fields in entries]

    async def count(self) -> int:
        return int(await self.redis.xlen(self.keys.dead))

    async def retry(self, entry_id: str) -> str | None:
        """Queue the job again; returns its new stream entry id, None if no such dead letter."""
        entries: Any = await self.redis.xrange(self.keys.dead, entry_id, entry_id)
        if not entries:
            return None
        letter = _dead_letter(*entries[0])
        if not is_valid_job_id(letter.job_id):
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
        reply = await self._requeue(
            keys=[
                self.keys.dead,
                self.keys.stream,
                self.keys.job(letter.job_id),
                self.keys.metrics,
            ],
            args=[
                entry_id,
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
                    await self.redis.xdel(self.keys.dead, letter.entry_id)
        return retried

    async def purge(self) -> int:
        """Forget every dead letter; returns how many there were."""
        count = await self.count()
        await self.redis.delete(self.keys.dead)
        return count


def decode_dead_letters(entries: Any) -> list[DeadLetter]:
    """Dead letters from an ``XRANGE``/``XREVRANGE`` reply."""
    return [_dead_letter(entry_id, fields) for entry_id, fields in entries]


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
