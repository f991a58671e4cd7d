"""The consumer loop: read entries as a group member, process, store, record, acknowledge.

Promise: an entry is acknowledged only together with its job's final status, and only after
the result file is in place. A job whose image cannot be processed ends ``failed`` with a
message a person understands, and the worker goes on with the next one.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from dataclasses import dataclass

import anyio
import anyio.to_thread

from imgstream import imaging
from imgstream.config import Settings
from imgstream.jobs import ResultInfo
from imgstream.operations import JobSpec, Limits, SpecError, parse_operations_json
from imgstream.queue import Delivery, JobQueue, Keys, connect
from imgstream.storage import LocalStorage, Storage

log = logging.getLogger("imgstream.worker")


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_steps=settings.max_steps,
        max_sigma=settings.max_sigma,
        max_dimension=settings.max_dimension,
        max_pixels=settings.max_pixels,
        max_frames=settings.max_frames,
    )


def consumer_name() -> str:
    """Unique per process and recognisable: ``host-pid-random``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class JobFailure(Exception):
    """A deterministic failure: the job ends ``failed`` with this code and message."""

    code: str
    message: str


def process_job(storage: Storage, job_id: str, spec: JobSpec, limits: Limits) -> ResultInfo:
    """Render the job's original and store the result; blocking, runs in a worker thread."""
    try:
        source = storage.original_source(job_id)
    except FileNotFoundError:
        raise JobFailure("original_missing", "the uploaded image is no longer stored") from None
    try:
        rendered = imaging.render(source, spec, limits)
    except imaging.ImagingError as exc:
        raise JobFailure(exc.code, str(exc)) from None
    storage.save_result(job_id, rendered.data, rendered.format.extension)
    return ResultInfo(
        width=rendered.width,
        height=rendered.height,
        format=rendered.format.value,
        bytes=len(rendered.data),
    )


class Worker:
    """One consumer of the group: ``run()`` serves until ``stop()``; ``burst`` drains, returns."""

    def __init__(self, settings: Settings, queue: JobQueue, storage: Storage) -> None:
        self.settings = settings
        self.queue = queue
        self.storage = storage
        self.limits = limits_from(settings)
        self.consumer = consumer_name()
        self._stopping = False

    def stop(self) -> None:
        """Stop reading new entries; the batch in hand is still finished."""
        self._stopping = True

    async def run(self, *, burst: bool = False) -> None:
        await self.queue.ensure_group()
        log.info("worker %s reading %s", self.consumer, self.queue.keys.stream)
        while not self._stopping:
            deliveries = await self.queue.read(
                self.consumer,
                count=self.settings.read_batch,
                block_ms=10 if burst else self.settings.block_ms,
            )
            if not deliveries and burst:
                return
            for delivery in deliveries:
                await self.handle(delivery)

    async def handle(self, delivery: Delivery) -> None:
        if delivery.entry is None:
            log.error("discarding malformed entry %s: %s", delivery.entry_id, delivery.problem)
            await self.queue.discard(delivery.entry_id)
            return
        lease = uuid.uuid4().hex
        attempt = await self.queue.start(delivery, lease)
        if attempt < 0:
            await self.queue.discard(delivery.entry_id)  # already ended: a duplicate delivery
            return
        ttl = self.settings.result_ttl
        try:
            spec = self._spec(delivery)
            result = await anyio.to_thread.run_sync(
                process_job, self.storage, delivery.entry.job_id, spec, self.limits
            )
        except JobFailure as failure:
            log.info("job %s failed: %s", delivery.job_id, failure.message)
            await self.queue.fail(
                delivery, lease, code=failure.code, message=failure.message, ttl=ttl
            )
            return
        except Exception:
            log.exception("job %s failed unexpectedly", delivery.job_id)
            await self.queue.fail(
                delivery,
                lease,
                code="internal",
                message="the worker hit an internal error",
                ttl=ttl,
            )
            return
        await self.queue.complete(delivery, lease, result, ttl=ttl)

    @staticmethod
    def _spec(delivery: Delivery) -> JobSpec:
        assert delivery.entry is not None
        try:
            operations = parse_operations_json(delivery.entry.operations)
            return JobSpec(operations=operations, format=delivery.entry.format or None)
        except (SpecError, ValueError) as exc:
            raise JobFailure("invalid_spec", f"the job's parameters are invalid: {exc}") from None


async def serve(settings: Settings, *, burst: bool = False) -> None:
    """Run one worker in this process until SIGTERM/SIGINT (or until drained, in burst mode)."""
    imaging.configure(
        concurrency=settings.vips_concurrency, cache_max_mem_mb=settings.vips_cache_mb
    )
    redis = connect(settings.effective_redis_url)
    queue = JobQueue(redis, Keys(settings.key_prefix), settings.group)
    worker = Worker(settings, queue, LocalStorage(settings.data_dir))
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tasks:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    worker.stop()
                    return

            tasks.start_soon(stop_on_signal)
            try:
                await worker.run(burst=burst)
            finally:
                tasks.cancel_scope.cancel()
                await redis.aclose()
