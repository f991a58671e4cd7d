"""The consumer loop: read entries as a group member, process, store, record, acknowledge.

Promises, which together make delivery at least once with a single fenced outcome:
- an entry is acknowledged only together with its job's final status, and only after the
  result file is in place;
- entries a dead worker left pending are taken over once idle past the visibility timeout,
  while a live worker keeps its own entries fresh, however long its job runs;
- a deterministic failure (undecodable image, impossible parameters) ends the job at once;
  a transient one (storage error, time limit) is retried with exponential backoff, and a
  job that used up its attempts — or killed its worker each time — is dead-lettered;
- while Redis is unreachable, frozen or refusing commands (out of memory, ``MISCONF``, …)
  the worker waits and retries, keeping the work in hand; so it does while the disk is too
  full to store a result, without spending an attempt;
- it refuses to start against a Redis whose ``maxmemory-policy`` may evict keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import Sequence
from typing import NamedTuple

import anyio
import anyio.to_thread
from redis.exceptions import RedisError

from imgstream.cache import SharedFiles
from imgstream.config import Settings
from imgstream.content import content_key
from imgstream.deliveries import Delivery, MalformedDelivery, Starting, ValidDelivery
from imgstream.heartbeats import consumer_name
from imgstream.held_entries import HeldEntries
from imgstream.job_counters import JobMetrics
from imgstream.jobs import ResultInfo
from imgstream.lifecycle import StartRefused
from imgstream.operations import LimitError, SpecError, spec_from_entry
from imgstream.outages import Patience, Stopped
from imgstream.processing import (
    DiskFull,
    JobFailure,
    TransientFailure,
    process_job,
)
from imgstream.queue import JobQueue
from imgstream.redis_health import eviction_problem
from imgstream.storage import Storage
from imgstream.telemetry import JobTelemetry

log = logging.getLogger("imgstream.worker")

EXIT_STUCK = 70
"""A render ignored libvips' kill for IMGSTREAM_JOB_BACKSTOP past its time limit."""
CONSUMER_HYGIENE_INTERVAL = 60.0


class UnfitRedis(Exception):
    """Redis is configured so that it would lose jobs: the worker refuses to start."""


class Started(NamedTuple):
    """A job's start already sent to Redis: its lease and the start script's reply."""

    lease: str
    attempt: int


class Worker:
    """One consumer of the group. ``run()`` serves until ``stop()``; ``burst`` drains, returns."""

    def __init__(self, settings: Settings, queue: JobQueue, storage: Storage) -> None:
        self.settings = settings
        self.queue = queue
        self.storage = storage
        self.limits = settings.limits
        self.consumer = consumer_name()
        self.held = HeldEntries(queue, self.consumer, settings.visibility_timeout)
        self._stopping = False
        self.patience = Patience(lambda: self._stopping)
        self.reading = anyio.Event()
        """Set once this worker has joined the consumer group and starts reading."""
        self._visibility_ms = int(settings.visibility_timeout * 1000)
        self.telemetry = JobTelemetry(JobMetrics(queue.redis, queue.keys), self.consumer)
        self.shared = SharedFiles(queue.redis, queue.keys, first_look=settings.orphan_age)

    def stop(self) -> None:
        """Stop taking entries; the job in hand is finished, the rest handed back."""
        self._stopping = True

    async def run(self, *, burst: bool = False) -> None:
        try:
            policy = await self.patience.read(self.queue.eviction_policy)
            problem = eviction_problem(policy, allowed=self.settings.allow_eviction)
            if problem is not None:
                raise UnfitRedis(problem)
            await self.patience.read(self.queue.ensure_group)
        except Stopped:
            return
        streams = ", ".join(lane.stream for lane in self.queue.served)
        log.info("worker %s reading %s", self.consumer, streams)
        self.reading.set()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.held.keep_fresh)
            try:
                await self._consume(burst=burst)
            finally:
                tasks.cancel_scope.cancel()
        await self._leave_group()

    async def _consume(self, *, burst: bool) -> None:
        recovery_interval = max(0.2, self.settings.visibility_timeout / 4)
        next_recovery = next_hygiene = 0.0
        while not self._stopping:
            try:
                deliveries: list[Delivery] = []
                if time.monotonic() >= next_recovery:
                    deliveries = await self._claim_stale()
                    next_recovery = time.monotonic() + recovery_interval
                if time.monotonic() >= next_hygiene:
                    await self.patience.read(
                        self.queue.remove_idle_consumers,
                        idle_ms=int(self.settings.consumer_idle_ttl * 1000),
                    )
                    next_hygiene = time.monotonic() + CONSUMER_HYGIENE_INTERVAL
                if not deliveries:
                    deliveries = await self.patience.read(
                        self.queue.read,
                        self.consumer,
                        count=self.settings.read_batch,
                        block_ms=10
                        if burst
                        else min(self.settings.block_ms, int(recovery_interval * 1000)),
                    )
            except Stopped:
                return
            if not deliveries and burst:
                return
            await self._handle_batch(deliveries)
            await self.telemetry.flush()  # the batch's counters, in one round trip

    async def _claim_stale(self) -> list[Delivery]:
        claimed = await self.patience.read(
            self.queue.claim_stale,
            self.consumer,
            min_idle_ms=self._visibility_ms,
            count=self.settings.read_batch,
        )
        for delivery in claimed:
            log.warning("took over entry %s (job %s)", delivery.entry_id, delivery.job_id)
        return claimed

    async def _handle_batch(self, deliveries: Sequence[Delivery]) -> None:
        self.held.add(delivery.ref for delivery in deliveries)
        started: Started | None = None
        upcoming: Delivery | None = None  # the entry ``started`` belongs to
        for index, delivery in enumerate(deliveries):
            if started is not None and delivery is not upcoming:
                continue  # skipped when the upcoming entry was chosen: no longer ours
            if self._stopping and started is None:
                unstarted = [d.ref for d in deliveries[index:] if d.ref in self.held]
                await self.held.hand_back(unstarted)
                return
            if delivery.ref not in self.held and started is None:
                continue  # taken over by another worker while it waited in our batch
            upcoming = self._upcoming(deliveries[index + 1 :])
            try:
                started = await self.handle(delivery, started=started, upcoming=upcoming)
            except Stopped:
                return
            finally:
                self.held.discard(delivery.ref)

    def _upcoming(self, rest: Sequence[Delivery]) -> ValidDelivery | None:
        """The entry to start together with this one's outcome: the next one still ours."""
        for delivery in rest:
            if delivery.ref in self.held:
                return delivery if isinstance(delivery, ValidDelivery) else None
        return None

    async def handle(
        self,
        delivery: Delivery,
        *,
        started: Started | None = None,
        upcoming: ValidDelivery | None = None,
    ) -> Started | None:
        """Take one entry to its end: done, failed, dead-lettered, or left for recovery.

        ``started`` is this entry's start, already sent with the previous entry's outcome;
        ``upcoming`` is the next entry of the batch, started with this one's success in the
        same round trip (its start is returned) unless the worker is stopping.
        """
        if isinstance(delivery, MalformedDelivery):
            log.error("discarding malformed entry %s: %s", delivery.entry_id, delivery.problem)
            await self.patience.write(self.queue.discard, delivery)
            return None
        max_attempts = self.settings.max_attempts
        while True:
            if started is not None:
                lease, attempt = started
                started = None
            else:
                lease = uuid.uuid4().hex
                attempt = await self.patience.write(
                    self.queue.start, delivery, lease, self.consumer, max_attempts
                )
            if attempt == StartRefused.ALREADY_ENDED:
                await self.patience.write(self.queue.discard, delivery)
                return None
            if attempt == StartRefused.EXHAUSTED:
                log.error("job %s is poison; dead-lettering it", delivery.job_id)
                reason = (
                    f"the job was started {max_attempts} times and never finished: each attempt "
                    "stopped its worker process or ran out of time (IMGSTREAM_MAX_ATTEMPTS)"
                )
                await self._fail(delivery, "", "poison", reason, dead_letter=True)
                return None
            began = self.telemetry.started(delivery, attempt)
            try:
                result = await self._process_when_room(delivery)
            except JobFailure as failure:
                await self._fail(delivery, lease, failure.code, failure.message, began=began)
                return None
            except Exception as problem:
                reason = str(problem) if isinstance(problem, TransientFailure) else "internal error"
                if not isinstance(problem, TransientFailure):
                    log.exception("job %s: unexpected error", delivery.job_id)
                if attempt >= max_attempts:
                    reason += f"; gave up after {attempt} attempts (IMGSTREAM_MAX_ATTEMPTS)"
                    await self._fail(
                        delivery, lease, "retries_exhausted", reason, dead_letter=True, began=began
                    )
                    return None
                pause = self._backoff(attempt)
                log.warning(
                    "job %s attempt %d: %s; retrying in %.1f s",
                    delivery.job_id,
                    attempt,
                    reason,
                    pause,
                    extra=self.telemetry.fields(delivery, attempt, event="job.retrying"),
                )
                await anyio.sleep(pause)
                continue
            recorded, next_started = await self._complete(delivery, lease, result, upcoming)
            if not recorded:
                log.warning(
                    "job %s was taken over meanwhile; the newer outcome stands", delivery.job_id
                )
                return next_started
            if result.name:
                await self.shared.record(result)
            self.telemetry.finished(delivery, "done", began)
            await self.telemetry.flush(only_if_due=True)
            return next_started

    async def _complete(
        self,
        delivery: ValidDelivery,
        lease: str,
        result: ResultInfo,
        upcoming: ValidDelivery | None,
    ) -> tuple[bool, Started | None]:
        """Record success; with an ``upcoming`` entry (and not stopping), start it in the same
        round trip. Returns whether the outcome was recorded, and the upcoming one's start."""
        ttl = self.settings.result_ttl
        if upcoming is None or self._stopping:
            return await self.patience.write(
                self.queue.complete, delivery, lease, result, ttl=ttl
            ), None
        then = Starting(upcoming, uuid.uuid4().hex, self.consumer, self.settings.max_attempts)
        recorded, attempt = await self.patience.write(
            self.queue.complete_then_start, delivery, lease, result, ttl=ttl, then=then
        )
        return recorded, Started(then.lease, attempt)

    async def _fail(
        self,
        delivery: ValidDelivery,
        lease: str,
        code: str,
        message: str,
        *,
        dead_letter: bool = False,
        began: float | None = None,
    ) -> None:
        recorded = await self.patience.write(
            self.queue.fail,
            delivery,
            lease,
            code=code,
            message=message,
            ttl=self.settings.result_ttl,
            dead_letter=dead_letter,
        )
        if recorded:
            self.telemetry.finished(delivery, "failed", began, code=code, error=message)
            await self.telemetry.flush(only_if_due=True)

    async def _process_when_room(self, delivery: ValidDelivery) -> ResultInfo:
        """Process; while the disk is full, wait and try again under the same attempt and
        lease (the entry stays ours, kept fresh), so a full disk costs time, not the job."""
        pause = 1.0
        while True:
            try:
                return await self._process(delivery)
            except DiskFull as exc:
                if self._stopping:
                    await self.held.hand_back([delivery.ref])
                    raise Stopped() from None
                log.error(
                    "job %s: %s; retrying in %.0f s (the job is kept)",
                    delivery.job_id,
                    exc,
                    pause,
                    extra={"event": "storage.full", "job": delivery.job_id},
                )
                await anyio.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def _process(self, delivery: ValidDelivery) -> ResultInfo:
        try:
            spec = spec_from_entry(delivery.entry.operations, delivery.entry.output(), self.limits)
        except LimitError as exc:
            raise JobFailure("limit_exceeded", str(exc)) from None
        except SpecError as exc:
            raise JobFailure("invalid_spec", f"the job's parameters are invalid: {exc}") from None
        entry = delivery.entry
        result_name = ""
        if self.settings.result_cache and entry.original_sha256:
            key = content_key(entry.original_sha256, spec)
            if await self.patience.write(self.shared.pin, key, entry.job_id):
                result_name = key  # stored once, under its content key, for the cache
        timeout = self.settings.job_timeout
        with anyio.move_on_after(timeout + self.settings.job_backstop):
            return await anyio.to_thread.run_sync(
                process_job,
                self.storage,
                entry.job_id,
                spec,
                self.limits,
                timeout,
                self.settings.placeholders,
                entry.original_sha256,
                entry.original_name,
                result_name,
                abandon_on_cancel=True,
            )
        # libvips ignored the kill: the thread cannot be stopped, so the process goes, and the
        # supervisor starts a fresh one; the entry is recovered and counted as an attempt.
        log.critical("job %s is stuck past its time limit; exiting", delivery.job_id)
        os._exit(EXIT_STUCK)

    def _backoff(self, attempt: int) -> float:
        base = self.settings.retry_backoff * 2 ** (attempt - 1)
        return float(min(30.0, base * random.uniform(0.8, 1.2)))

    async def _leave_group(self) -> None:
        with contextlib.suppress(RedisError):
            await self.queue.remove_consumer_if_idle(self.consumer)
