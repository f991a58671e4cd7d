"""A batch's event stream against a real API process and a real worker started while the
stream is open: every job's changes arrive, and the stream ends once every job has ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from imgstream.redis_server import RedisServer

from images import encode, flat, photo
from service import api_alone, start, stop

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

SMALL = encode(flat(16, 16, [200, 30, 30]), "png")
NOISY = encode(photo(400, 300), "png")
"""Over 1500 bytes as a JPEG even at quality 1: its job fails."""


async def test_batch_events_follow_every_job_and_end(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with api_alone(redis_server.url, tmp_path, IMGSTREAM_SSE_KEEPALIVE="0.5") as api:
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
            accepted = await http.post(
                "/api/batches",
                files=[("image", ("a.png", SMALL)), ("image", ("n.png", NOISY))],
                data={"operation": "grayscale", "format": "jpeg", "max_bytes": "1500"},
            )
            assert accepted.status_code == 202, accepted.text
            batch = accepted.json()
            events: list[tuple[str, dict[str, Any]]] = []
            worker = None
            try:
                async with http.stream("GET", batch["links"]["events"]) as stream:
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    name = ""
                    async for line in stream.aiter_lines():
                        if line.startswith("event: "):
                            name = line.removeprefix("event: ")
                        elif line.startswith("data: "):
                            events.append((name, json.loads(line.removeprefix("data: "))))
                            if name == "batch" and worker is None:  # the first summary
                                worker = start(["worker", "--concurrency", "1"], api.env, api.log)
            finally:
                if worker is not None:
                    stop(worker)
    names = [name for name, _ in events]
    assert names[:3] == ["job", "job", "batch"]
    assert [data["status"] for _, data in events[:2]] == ["queued", "queued"]
    assert events[2][1]["status"] == "processing"
    final_name, final = events[-1]
    assert final_name == "end" and names.count("end") == 1
    assert final["status"] == "partial" and final["id"] == batch["id"]
    assert final["counts"] == {"queued": 0, "processing": 0, "done": 1, "failed": 1, "expired": 0}
    last_job = {data["id"]: data["status"] for name, data in events if name == "job"}
    assert last_job == {batch["jobs"][0]["id"]: "done", batch["jobs"][1]["id"]: "failed"}
