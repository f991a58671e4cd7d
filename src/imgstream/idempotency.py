"""Idempotency-Key for uploads: who sent a key, what was asked, and the answer to a repeat.

Promises: a key sent again by the same client within ``IMGSTREAM_IDEMPOTENCY_TTL`` creates
nothing and is answered with the job it first made (``Idempotent-Replayed: true``), or with
``409 idempotency_conflict`` when the request differs; two clients never share a key's
record. The record itself is written by the script that queues the job (``producer``).
"""

from __future__ import annotations

import hashlib
import json
import re

from fastapi import Request
from fastapi.responses import JSONResponse

from imgstream.api_models import JobAccepted
from imgstream.errors import ApiError
from imgstream.lifecycle import JobStatus
from imgstream.operations import JobSpec
from imgstream.producer import Replayed
from imgstream.ratelimit import client_identity
from imgstream.services import Services

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def request_fingerprint(image_digest: str, spec: JobSpec, extra: dict[str, str]) -> str:
    """What makes two uploads the same request: the image's bytes, the steps, the output
    options and ``extra`` fields (a callback URL); not the file's name."""
    canonical = json.dumps(
        {
            "image": image_digest,
            "operations": json.loads(spec.operations_json()),
            "output": spec.output_fields(),
            **extra,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_scope(request: Request) -> str | None:
    """The digest naming this client's ``Idempotency-Key``, or None when none was sent.

    The client is the API key (its fingerprint), or the address while keys are off, so
    two clients never share a key's record.
    """
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            422,
            "invalid_request",
            f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters (a UUID, say)",
        )
    client = client_identity(request.scope, request.app.state.keyring)
    return hashlib.sha256(f"{client}\n{key}".encode()).hexdigest()


async def replay(services: Services, prior: Replayed, fingerprint: str) -> JSONResponse:
    """The answer to a repeated key: its job as first accepted, or a conflict."""
    if prior.request != fingerprint:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"this {IDEMPOTENCY_HEADER} was used for a different request (another image, "
            "steps or output); use a new key for a new request",
        )
    record = await services.queue.get_job(prior.job_id)
    status = record.status if record is not None else JobStatus.QUEUED
    return accepted(services, prior.job_id, status, replayed=True)


def accepted(
    services: Services, job_id: str, status: JobStatus = JobStatus.QUEUED, *, replayed: bool = False
) -> JSONResponse:
    view = JobAccepted.for_job(job_id, services.settings.public_url, status)
    headers = {"Location": view.links.self}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return JSONResponse(view.model_dump(mode="json"), status_code=202, headers=headers)
