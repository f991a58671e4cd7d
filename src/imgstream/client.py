"""A small HTTP client of the API, used by ``imgstream submit`` and ``imgstream status``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, cast

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


RETRYABLE = frozenset({429, 503})
MAX_RETRY_PAUSE = 30.0


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_RETRY_PAUSE, max(0.1, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


class Client:
    """Answers ``429`` and ``503`` are waited out as ``Retry-After`` says, a few times."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        on_retry: Callable[[int, float], None] | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)
        self.retries = retries
        self.on_retry = on_retry

    def submit(
        self,
        image: Path,
        fields: Mapping[str, str],
        on_progress: Callable[[int], None] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Upload ``image`` as one job; ``on_progress(bytes sent)`` as the upload goes.

        With ``idempotency_key`` a retry (this client's own, or a rerun) makes no second job.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}

        def post() -> httpx.Response:
            with image.open("rb") as stream:
                body = (
                    stream
                    if on_progress is None
                    else cast(IO[bytes], _Counting(stream, on_progress))
                )
                return self.http.post(
                    "/api/jobs",
                    files={"image": (image.name, body)},
                    data=dict(fields),
                    headers=headers,
                )

        accepted: dict[str, Any] = self._patiently(post).json()
        return accepted

    def submit_batch(
        self,
        images: Sequence[Path],
        fields: Mapping[str, str],
        on_progress: Callable[[int], None] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Upload ``images`` as one batch (a job each); ``on_progress(bytes sent in all)``."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}

        def post() -> httpx.Response:
            with ExitStack() as files:
                parts = []
                offset = 0
                for image in images:
                    stream: IO[bytes] = files.enter_context(image.open("rb"))
                    if on_progress is not None:
                        stream = cast(IO[bytes], _Counting(stream, on_progress, offset))
                    parts.append(("image", (image.name, stream)))
                    offset += image.stat().st_size
                return self.http.post(
                    "/api/batches", files=parts, data=dict(fields), headers=headers
                )

        accepted: dict[str, Any] = self._patiently(post).json()
        return accepted

    def limits(self) -> dict[str, Any]:
        """The operator's limits (``GET /api/limits``, public)."""
        limits: dict[str, Any] = self._patiently(lambda: self.http.get("/api/limits")).json()
        return limits

    def batch(self, batch_id: str) -> dict[str, Any]:
        path = f"/api/batches/{batch_id}"
        batch: dict[str, Any] = self._patiently(lambda: self.http.get(path)).json()
        return batch

    def download_zip(self, batch: Mapping[str, Any], target: Path) -> int:
        """Save the batch's ZIP as it arrives (never whole in memory); returns its size."""
        with self.http.stream("GET", batch["links"]["result"]) as response:
            if not response.is_success:
                response.read()
                _raise_for_error(response)
            written = 0
            with target.open("wb") as sink:
                for piece in response.iter_bytes():
                    written += sink.write(piece)
        return written

    def status(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._patiently(lambda: self.http.get(f"/api/jobs/{job_id}")).json()
        return job

    def _patiently(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = send()
            if response.status_code not in RETRYABLE or attempt == self.retries:
                break
            pause = _retry_after(response)
            if self.on_retry is not None:
                self.on_retry(response.status_code, pause)
            time.sleep(pause)
        _raise_for_error(response)
        return response

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
        response = self._patiently(lambda: self.http.get(job["result"]["url"]))
        target.write_bytes(response.content)
        return len(response.content)

    def close(self) -> None:
        self.http.close()


class _Counting:
    """A binary file that reports how much of it has been read so far (an upload's progress)."""

    def __init__(self, stream: IO[bytes], report: Callable[[int], None], offset: int = 0) -> None:
        self.stream = stream
        self.report = report
        self.offset = offset
        """Bytes of the files sent before this one, in the same request."""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.report(self.offset + self.stream.tell())
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def fileno(self) -> int:
        return self.stream.fileno()
