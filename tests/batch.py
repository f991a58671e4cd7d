"""Push many hostile files through a running service at once, and judge every answer.

The contract (shared/corpus/real-world/README.md): every file yields a processed image or a
clear client/job error; never a 5xx, a stack trace or a stuck job; the workers never die.
``run_batch`` submits every sample first, then waits for all of them, and returns one line
per broken promise, so a single run reports every problem at once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import pyvips

from service import Service

CLEAN_FAILURES = frozenset({"decode_error", "unsupported_format", "limit_exceeded"})
SAFE_DOWNLOAD_NAME = re.compile(r'filename="[A-Za-z0-9._-]+"')
PIPELINES: tuple[dict[str, str], ...] = (
    {"operations": '[{"op":"resize","width":256}]'},
    {"operations": '[{"op":"resize","width":256},{"op":"grayscale"}]', "format": "png"},
    {
        "operations": '[{"op":"resize","width":200,"height":200,"fit":"cover"},'
        '{"op":"blur","sigma":1.5}]',
        "format": "webp",
    },
    {"operations": '[{"op":"resize","height":300},{"op":"grayscale"}]', "format": "jpeg"},
)
"""Every job starts with a resize (as thumbnails are made); the steps and formats rotate."""


class Expect(StrEnum):
    REFUSED = "refused"
    """415 at upload: not an accepted format."""
    IMAGE = "image"
    """A processed image."""
    IMAGE_OR_ERROR = "image or clean error"
    """Malformed input, or a valid file this libvips lacks a codec for."""
    LIMIT = "limit"
    """Refused by a limit: 413/422 at upload, or the job fails with ``limit_exceeded``."""
    NO_IMAGE = "clean error"
    """Any clean refusal (4xx at upload or a failed job), but never an image."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    data: bytes
    expect: Expect
    filename: str = "upload.jpg"
    payload: bytes = b""
    """Bytes smuggled into the file that must not reach the result (metadata is stripped)."""
    fields: dict[str, str] | None = None
    """The job's form fields; None: the next of ``PIPELINES``."""


def run_batch(service: Service, samples: list[Sample], *, timeout: float = 240) -> list[str]:
    """Submit every sample, wait for every job, and list every broken promise."""
    problems: list[str] = []
    pending: dict[str, tuple[Sample, dict[str, str]]] = {}
    for index, sample in enumerate(samples):
        fields = sample.fields or PIPELINES[index % len(PIPELINES)]
        response = service.http.post(
            "/api/jobs", files={"image": (sample.filename, sample.data)}, data=fields
        )
        if response.status_code == 202:
            pending[response.json()["id"]] = (sample, fields)
        else:
            problems += _judge_refusal(sample, response, service.data_dir)
    jobs = _wait_all(service, list(pending), timeout)
    for job_id, (sample, _fields) in pending.items():
        job = jobs.get(job_id)
        if job is None:
            problems.append(f"{sample.name}: job {job_id} did not finish within {timeout:g} s")
            continue
        problems += _judge_job(service, sample, job)
    return problems


def _wait_all(service: Service, job_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    finished: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    waiting = list(job_ids)
    while waiting and time.monotonic() < deadline:
        still = []
        for job_id in waiting:
            response = service.http.get(f"/api/jobs/{job_id}")
            job = response.json() if response.status_code == 200 else None
            if job is not None and job["status"] in ("done", "failed"):
                finished[job_id] = job
            else:
                still.append(job_id)
        waiting = still
        if waiting:
            time.sleep(0.2)
    return finished


def _judge_refusal(sample: Sample, response: httpx.Response, data_dir: Path) -> list[str]:
    status = response.status_code
    where = f"{sample.name} [{sample.expect}]: upload answered {status}"
    if not 400 <= status < 500:
        return [f"{where}: {response.text[:200]}"]
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return [f"{where} without the JSON error body: {response.text[:200]}"]
    problems = [f"{where}: unclear message {message!r}"] if _unclear(message, data_dir) else []
    if sample.expect is Expect.REFUSED and (status, code) != (415, "unsupported_format"):
        problems.append(f"{where} {code}: expected 415 unsupported_format")
    elif sample.expect is Expect.IMAGE:
        problems.append(f"{where} {code} ({message}): expected an image")
    elif sample.expect is Expect.LIMIT and code not in ("limit_exceeded", "too_large"):
        problems.append(f"{where} {code} ({message}): expected a limit to refuse it")
    return problems


def _judge_job(service: Service, sample: Sample, job: dict[str, Any]) -> list[str]:
    where = f"{sample.name} [{sample.expect}]: job {job['status']}"
    if job["status"] == "failed":
        code, message = job["error_code"], job["error"] or ""
        problems = []
        if code not in CLEAN_FAILURES or _unclear(message, service.data_dir):
            problems.append(f"{where} unclearly: {code} {message!r}")
        if sample.expect is Expect.REFUSED:
            problems.append(f"{where} ({code}): expected 415 at upload")
        elif sample.expect is Expect.IMAGE:
            problems.append(f"{where} ({code}: {message}): expected an image")
        elif sample.expect is Expect.LIMIT and code != "limit_exceeded":
            problems.append(f"{where} ({code}: {message}): expected a limit to refuse it")
        return problems
    if sample.expect in (Expect.REFUSED, Expect.LIMIT, Expect.NO_IMAGE):
        return [f"{where}: expected it to be refused, got {job['result']}"]
    return _judge_result(service, sample, job)


def _judge_result(service: Service, sample: Sample, job: dict[str, Any]) -> list[str]:
    where = f"{sample.name}: result"
    response = service.http.get(job["result"]["url"])
    if response.status_code != 200:
        return [f"{where} answered {response.status_code}"]
    problems = []
    disposition = response.headers.get("content-disposition", "")
    if not SAFE_DOWNLOAD_NAME.search(disposition):
        problems.append(f"{where}: unsafe Content-Disposition {disposition!r}")
    if sample.payload and sample.payload in response.content:
        problems.append(f"{where}: the smuggled payload reached the result")
    try:
        image = pyvips.Image.new_from_buffer(response.content, "")
        size = (image.width, image.height)
    except pyvips.Error as exc:
        return [*problems, f"{where} does not decode: {exc}"]
    if size != (job["result"]["width"], job["result"]["height"]):
        problems.append(f"{where} is {size}, the job says {job['result']}")
    return problems


def _unclear(message: str, data_dir: Path) -> bool:
    """A message a person cannot use, or one that leaks internals (a trace or a server path)."""
    return (
        not message.strip()
        or len(message) > 300
        or "Traceback" in message
        or str(data_dir) in message
        or "/tmp/" in message
    )
