"""arq: ``arq runners.peer_arq.WorkerSettings``, one per process."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import RedisSettings

from runners import tiny_task

REDIS = RedisSettings.from_dsn(tiny_task.redis_url())


async def tiny(_ctx: dict[str, Any], job_id: str) -> int:
    return tiny_task.process(job_id)


class WorkerSettings:
    functions: ClassVar = [tiny]
    redis_settings = REDIS
    poll_delay = 0.01  # the default 0.5 s caps a worker at max_jobs per half second
    handle_signals = True


def enqueue(job_ids: list[str]) -> None:
    async def main() -> None:
        pool = await create_pool(REDIS)
        for job_id in job_ids:
            await pool.enqueue_job("tiny", job_id)
        await pool.aclose()

    asyncio.run(main())
