"""Retention: the files of a job go when the job does, and nothing else is left behind.

Promises:
- a job's original and result are deleted once its hash has expired
  (``IMGSTREAM_RESULT_TTL`` after it ended, done or failed): ``finish.lua`` notes the expiry
  time in the set ``{prefix}:expiry``, and a sweep deletes the files of every due job whose
  hash is gone;
- files of live jobs are never touched: a queued or processing job's hash has no TTL, and a
  job retried from the dead letters gets its hash back without one;
- files no job accounts for — a producer that crashed between storing an original and
  queueing it, jobs that ended before this module existed — are deleted once they are older
  than ``IMGSTREAM_ORPHAN_AGE`` and no job hash names them; temporary files (``.*.tmp``)
  are deleted once their writer (a process of this host) is gone, or after
  ``IMGSTREAM_TEMPORARY_AGE`` whoever wrote them, and counted meanwhile;
- a shared file (an original stored once per SHA-256, a cached result once per content key:
  ``cache``) is deleted once the hash of every job that uses it is gone, so it lives as
  long as the newest of them; a job that was pinned but never made counts until it is older
  than ``IMGSTREAM_ORPHAN_AGE``;
- a sweep measures what is stored (files and bytes of originals and results) and leaves the
  figures in ``{prefix}:storage`` for the stats.

Sweeps run inside the worker processes, at most one per ``IMGSTREAM_JANITOR_INTERVAL`` across
the whole fleet (whoever first sets ``{prefix}:janitor:due``), and never two at once (the lock
``{prefix}:janitor:lock``: ``SET NX PX``, released only by its holder). ``imgstream gc`` runs
one sweep now. A sweep that outlives its lock lease may overlap the next; every step is
idempotent, so that costs only work.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import cast

import anyio
import anyio.to_thread
from redis.asyncio import Redis
from redis.exceptions import RedisError

from imgstream.batch_queue import BatchKeeper, BatchStore
from imgstream.cache import SharedFiles
from imgstream.config import Settings
from imgstream.connection import load_script
from imgstream.deployment import Deployment
from imgstream.jobs import is_shared_name, is_valid_job_id
from imgstream.queue import Keys
from imgstream.redis_health import is_outage
from imgstream.storage import Storage, StorageUse, StoredFile

log = logging.getLogger("imgstream.janitor")

TEMPORARY_AGE: float = Settings.model_fields["temporary_age"].default
"""Seconds after which a ``.*.tmp`` file is surely abandoned (writes take seconds)."""
ORPHAN_AGE: float = Settings.model_fields["orphan_age"].default
LOCK_LEASE_MS = 10 * 60 * 1000
BATCH = 500


@dataclass
class Sweep:
    """What one sweep did and found."""

    expired_jobs: int = 0
    orphans: int = 0
    temporaries: int = 0
    shared: int = 0
    """Shared files (and their cache entries) deleted: no job uses them any more."""
    files_removed: int = 0
    bytes_removed: int = 0
    open_batches: int = 0
    """Batches with a job not yet ended, kept alive for another result TTL."""
    storage: StorageUse = field(default_factory=StorageUse)

    def summary(self) -> dict[str, int]:
        return {
            "expired_jobs": self.expired_jobs,
            "orphans": self.orphans,
            "temporaries": self.temporaries,
            "shared": self.shared,
            "files_removed": self.files_removed,
            "bytes_removed": self.bytes_removed,
            "open_batches": self.open_batches,
        }


class Janitor:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        storage: Storage,
        *,
        temporary_age: float = TEMPORARY_AGE,
        orphan_age: float = ORPHAN_AGE,
        partitions: int = 1,
        batches: BatchKeeper | None = None,
    ) -> None:
        """``batches`` keeps batches alive as long as their jobs; without it, batches keep
        the expiry they were given."""
        self.redis = redis
        self.batches = batches
        self.partitions = partitions
        self.keys = keys
        self.storage = storage
        self.temporary_age = temporary_age
        self.orphan_age = orphan_age
        self._release = load_script(redis, "release")
        self.shared = SharedFiles(redis, keys, first_look=orphan_age)

    async def sweep_if_due(self, interval: float, owner: str) -> Sweep | None:
        """Sweep if no process of the fleet has in the last ``interval`` seconds."""
        due = await self.redis.set(self.keys.janitor_due, owner, nx=True, px=int(interval * 1000))
        return await self.sweep() if due else None

    async def sweep(self) -> Sweep | None:
        """One sweep now; None when another process is sweeping."""
        token = uuid.uuid4().hex
        if not await self.redis.set(self.keys.janitor_lock, token, nx=True, px=LOCK_LEASE_MS):
            return None
        try:
            sweep = Sweep()
            await self._remove_expired(sweep)
            await self._review_shared(sweep)
            if self.batches is not None:
                sweep.open_batches = await self.batches.sweep()
            await self._scan_storage(sweep)
            return sweep
        finally:
            await self._release(keys=[self.keys.janitor_lock], args=[token])

    async def _remove_expired(self, sweep: Sweep) -> None:
        seconds, _ = await self.redis.time()
        for part in range(self.partitions):
            await self._remove_expired_of(self.keys.partition(part).expiry, int(seconds), sweep)

    async def _remove_expired_of(self, expiry: str, seconds: int, sweep: Sweep) -> None:
        """The expired jobs one partition's expiry set names (its jobs' hashes share its tag)."""
        while True:
            due = cast(
                list[str],
                await self.redis.zrangebyscore(expiry, "-inf", seconds, start=0, num=BATCH),
            )
            if not due:
                return
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in due:
                    pipe.ttl(self.keys.job(job_id))
                ttls: list[int] = await pipe.execute()
            gone = [job_id for job_id, ttl in zip(due, ttls, strict=True) if ttl == -2]
            for job_id in gone:
                if is_valid_job_id(job_id):
                    await self._delete_job_files(job_id, sweep)
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, ttl in zip(due, ttls, strict=True):
                    if ttl > 0:  # outlived the noted time: look again when it expires
                        pipe.zadd(expiry, {job_id: seconds + ttl})
                    else:  # gone (files deleted), or retried and live again (no TTL)
                        pipe.zrem(expiry, job_id)
                await pipe.execute()
            sweep.expired_jobs += len(gone)
            if len(due) < BATCH:
                return

    async def _review_shared(self, sweep: Sweep) -> None:
        seconds, _ = await self.redis.time()
        while True:
            due = await self.shared.due(seconds, BATCH)
            for name in due:
                await self._review(name, seconds, sweep)
            if len(due) < BATCH:
                return

    async def _review(self, name: str, now: int, sweep: Sweep) -> None:
        """Forget the users of ``name`` that are gone; delete it when none is left, or else
        look again when the last user known now may be gone."""
        users = [(job_id, since) for job_id, since in await self.shared.users(name)]
        known = [job_id for job_id, _ in users if is_valid_job_id(job_id)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in known:
                pipe.ttl(self.keys.job(job_id))
            ttls = dict(zip(known, await pipe.execute(), strict=True))
        gone, again = [], [now + self.orphan_age]
        for job_id, since in users:
            ttl = ttls.get(job_id, -2)
            if ttl == -2 and since <= now - self.orphan_age:
                gone.append(job_id)
            elif ttl == -2:  # pinned for a job about to be made
                again.append(since + self.orphan_age)
            elif ttl > 0:
                again.append(now + ttl + 1)
        if await self.shared.retire(name, gone):
            await self._delete_shared(name, sweep)
        else:
            await self.shared.look_again(name, max(again))

    async def _delete_shared(self, name: str, sweep: Sweep) -> None:
        """Delete a retired shared file, then let the name be shared again. A failure leaves
        the file to the orphan sweep and the name refused until the mark's lease ends."""
        await self._delete_job_files(name, sweep)
        sweep.shared += 1
        await self.shared.retired(name)

    async def _delete_job_files(self, job_id: str, sweep: Sweep) -> None:
        removed, size = await anyio.to_thread.run_sync(self.storage.delete_job_files, job_id)
        sweep.files_removed += removed
        sweep.bytes_removed += size

    async def _scan_storage(self, sweep: Sweep) -> None:
        scan = await anyio.to_thread.run_sync(
            self.storage.scan, self.temporary_age, self.orphan_age
        )
        sweep.temporaries = scan.temporaries_removed
        sweep.files_removed += scan.temporaries_removed
        sweep.bytes_removed += scan.bytes_removed
        for name in [name for name in scan.old if is_shared_name(name)]:
            files = scan.old.pop(name)
            if await self.shared.retire(name, []):  # no users: left by a sweep that died
                await self._delete_shared(name, sweep)
                sweep.orphans += 1
                _uncount(scan.usage, files)
        candidates = list(scan.old)
        for start in range(0, len(candidates), BATCH):
            chunk = candidates[start : start + BATCH]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in chunk:
                    pipe.exists(self.keys.job(job_id))
                exists: list[int] = await pipe.execute()
            for job_id, known in zip(chunk, exists, strict=True):
                if known:
                    continue
                files = scan.old[job_id]
                removed, size = await anyio.to_thread.run_sync(self.storage.remove_files, files)
                sweep.orphans += 1
                sweep.files_removed += removed
                sweep.bytes_removed += size
                _uncount(scan.usage, files)
        sweep.storage = StorageUse(**scan.usage, scanned_at=round(time.time(), 3))
        figures = [item for pair in sweep.storage.to_hash().items() for item in pair]
        await self.redis.hset(self.keys.storage, items=figures)


def _uncount(usage: dict[str, int], files: list[StoredFile]) -> None:
    for found in files:
        usage[found.kind] -= 1
        usage[f"{found.kind}_bytes"] -= found.size


def janitor_for(deployment: Deployment) -> Janitor:
    settings = deployment.settings
    return Janitor(
        deployment.redis,
        deployment.keys,
        deployment.storage,
        temporary_age=settings.temporary_age,
        orphan_age=settings.orphan_age,
        partitions=settings.partitions,
        batches=BatchKeeper(
            BatchStore(deployment.redis, deployment.keys),
            deployment.queue.get_jobs,
            settings.result_ttl,
        ),
    )


async def run_janitor(deployment: Deployment, owner: str) -> None:
    """A worker's background task: take part in the fleet's sweep schedule, forever.

    Checking is one ``SET NX`` every few seconds; Redis outages and sweep errors are logged
    and waited out, never allowed to stop the worker. ``IMGSTREAM_JANITOR_INTERVAL=0``: none.
    """
    interval = deployment.settings.janitor_interval
    if interval <= 0:
        return
    janitor = janitor_for(deployment)
    check_every = min(30.0, max(1.0, interval / 4))
    while True:
        await anyio.sleep(check_every * random.uniform(0.5, 1.0))
        try:
            sweep = await janitor.sweep_if_due(interval, owner)
        except RedisError as exc:
            if not is_outage(exc):
                log.exception("retention sweep failed")
            continue
        except Exception:
            log.exception("retention sweep failed")
            continue
        if sweep is not None and sweep.files_removed:
            log.info(
                "retention sweep removed %d files",
                sweep.files_removed,
                extra={"event": "janitor.swept", **sweep.summary()},
            )


async def sweep_once(settings: Settings) -> Sweep | None:
    """``imgstream gc``: one sweep now, from any machine that sees the storage directory."""
    deployment = Deployment.open(settings, one_shot=True)
    try:
        return await janitor_for(deployment).sweep()
    finally:
        await deployment.aclose()
