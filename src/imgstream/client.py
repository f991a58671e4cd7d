"""A small HTTP client of the API, used by ``imgstream submit`` and ``imgstream status``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx


class ClientError(Exception):
    """The API answered with an error; the message is the API's own."""


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    raise ClientError(f"{response.status_code}: {message}")


class Client:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def submit(self, image: Path, fields: Mapping[str, str]) -> dict[str, Any]:
        with image.open("rb") as stream:
            response = self.http.post(
                "/api/jobs", files={"image": (image.name, stream)}, data=dict(fields)
            )
        _raise_for_error(response)
        accepted: dict[str, Any] = response.json()
        return accepted

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job_id}")
        _raise_for_error(response)
        job: dict[str, Any] = response.json()
        return job

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 300.0,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends (done or failed), reporting each status change."""
        deadline = time.monotonic() + timeout
        pause, last_status = 0.05, None
        while True:
            job = self.status(job_id)
            if job["status"] != last_status and on_change is not None:
                on_change(job)
            last_status = job["status"]
            if job["status"] in ("done", "failed"):
                return job
            if time.monotonic() > deadline:
                raise ClientError(f"job {job_id} did not finish within {timeout:g} s")
            time.sleep(pause)
            pause = min(pause * 1.5, 1.0)

    def download(self, job: Mapping[str, Any], target: Path) -> int:
        response = self.http.get(job["result"]["url"])
        _raise_for_error(response)
        target.write_bytes(response.content)
        return len(response.content)

    def close(self) -> None:
        self.http.close()
