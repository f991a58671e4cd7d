"""One worker process: the consumer loop and its companions, from start-up to a clean stop.

Besides ``worker.Worker``, each process runs its heartbeat (``heartbeats``), its share of
the retention sweeps (``janitor``) and the webhook sender (``webhook_sender``), all over one
``Deployment``. SIGTERM or SIGINT stops taking entries; the job in hand is finished. A
process that cannot work safely (storage unreachable at start, a Redis that may evict keys)
exits with ``EXIT_REFUSED``, and the supervisor stops the pool rather than restart it.
"""

from __future__ import annotations

import logging
import os
import signal

import anyio
import anyio.to_thread

from imgstream import imaging
from imgstream.config import Settings
from imgstream.deployment import Deployment
from imgstream.heartbeats import run_heartbeat
from imgstream.janitor import run_janitor
from imgstream.processes import EXIT_REFUSED
from imgstream.storage import StorageUnavailable
from imgstream.webhook_sender import run_webhook_sender
from imgstream.worker import UnfitRedis, Worker

log = logging.getLogger("imgstream.worker")


async def serve(settings: Settings, *, burst: bool = False) -> None:
    """Run one worker in this process until SIGTERM/SIGINT (or until drained, in burst mode)."""
    imaging.configure(
        concurrency=settings.vips_concurrency,
        cache_max_mem_mb=settings.vips_cache_mb,
        allow_untrusted=settings.allow_untrusted_formats,
    )
    try:
        deployment = Deployment.open(settings, blocking_ms=settings.block_ms)
        await anyio.to_thread.run_sync(deployment.storage.check)
    except StorageUnavailable as exc:
        log.critical("worker refuses to start: %s", exc, extra={"event": "storage.unavailable"})
        os._exit(EXIT_REFUSED)
    worker = Worker(settings, deployment.queue, deployment.storage)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tasks:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    log.info("worker %s stopping", worker.consumer)
                    worker.stop()
                    return

            tasks.start_soon(stop_on_signal)
            tasks.start_soon(
                run_heartbeat, settings, deployment.presence, worker.consumer, worker.reading
            )
            tasks.start_soon(run_janitor, deployment, worker.consumer)
            tasks.start_soon(run_webhook_sender, deployment)
            try:
                await worker.run(burst=burst)
            except UnfitRedis as exc:
                log.critical("worker refuses to start: %s", exc, extra={"event": "redis.unfit"})
                os._exit(EXIT_REFUSED)
            finally:
                tasks.cancel_scope.cancel()
                await deployment.aclose()
