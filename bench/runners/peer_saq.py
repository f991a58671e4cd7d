"""saq: ``saq runners.peer_saq.settings --workers 2``."""

from __future__ import annotations

import asyncio
from typing import Any

from saq import Queue

from runners import tiny_task


async def tiny(_ctx: dict[str, Any], *, job_id: str) -> int:
    return tiny_task.process(job_id)


settings = {
    "queue": Queue.from_url(tiny_task.redis_url()),
    "functions": [tiny],
    "concurrency": 10,
}


def enqueue(job_ids: list[str]) -> None:
    async def main() -> None:
        queue = Queue.from_url(tiny_task.redis_url())
        await queue.connect()
        for job_id in job_ids:
            await queue.enqueue("tiny", job_id=job_id)
        await queue.disconnect()

    asyncio.run(main())
