"""A worker's webhook sender: POST each ended job's status to its callback URL.

Promises: at least once (a call leaves the schedule only once answered 2xx, or given up);
retried with exponential backoff on a non-2xx answer, a redirect (never followed) or a
connection error, for ``IMGSTREAM_WEBHOOK_RETRY_FOR`` after the job ended, then listed as
undeliverable; the host is resolved once per try, refused unless every address is public
(``IMGSTREAM_WEBHOOK_ALLOW_PRIVATE``), and the connection goes to the address checked, so
a name that changes its answer (DNS rebinding) cannot redirect the call. It runs beside the
consumer loop, so a slow receiver never delays a job.
"""

from __future__ import annotations

import logging
import time

import anyio
import anyio.to_thread
import httpx
from redis.exceptions import RedisError

from imgstream.api_models import job_view
from imgstream.config import Settings
from imgstream.deployment import Deployment
from imgstream.jobs import JobRecord, parse_timestamp, utc_now
from imgstream.queue import JobQueue
from imgstream.redis_health import is_outage
from imgstream.webhook_queue import Undeliverable, WebhookQueue
from imgstream.webhooks import (
    SIGNATURE_HEADER,
    RefusedUrl,
    backoff,
    literal_address,
    parse_url,
    resolve,
    signature,
)

log = logging.getLogger("imgstream.webhooks")

BATCH = 16
"""Webhooks taken (and sent concurrently) at once by one sender."""
IDLE_POLL = 0.5
"""Seconds between two looks at the schedule while nothing is due."""
MAX_ERROR_CHARS = 300


class WebhookSender:
    """Sends the webhooks that are due, for one worker process."""

    def __init__(self, settings: Settings, queue: JobQueue, webhooks: WebhookQueue) -> None:
        self.settings = settings
        self.queue = queue
        self.webhooks = webhooks
        self._lease_ms = int((settings.webhook_timeout + 30) * 1000)

    async def send_due(self) -> int:
        """Try every webhook due now (up to ``BATCH``); returns how many were tried."""
        job_ids = await self.webhooks.claim(BATCH, self._lease_ms)
        if job_ids:
            async with httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                timeout=self.settings.webhook_timeout,
                headers={"User-Agent": "imgstream-webhook"},
            ) as client, anyio.create_task_group() as tasks:  # fmt: skip
                for job_id in job_ids:
                    tasks.start_soon(self._send, client, job_id)
        return len(job_ids)

    async def _send(self, client: httpx.AsyncClient, job_id: str) -> None:
        record = await self.queue.get_job(job_id)
        if record is None or not record.callback_url:
            await self._give_up(job_id, record, "the job expired before its webhook was delivered")
            return
        attempt = await self.webhooks.attempted(job_id)
        with anyio.move_on_after(self.settings.webhook_timeout) as deadline:
            problem = await self._post(client, record)
        if deadline.cancelled_caught:
            problem = f"no answer within {self.settings.webhook_timeout:g} s"
        if problem is None:
            await self.webhooks.delivered(job_id)
            log.info("webhook of job %s delivered", job_id, extra={"event": "webhook.delivered"})
            return
        if _age(record) + backoff(attempt, self.settings.webhook_backoff) > (
            self.settings.webhook_retry_for
        ):
            await self._give_up(job_id, record, problem, attempt)
            return
        pause = backoff(attempt, self.settings.webhook_backoff)
        log.info(
            "webhook of job %s failed (%s); next try in %g s",
            job_id,
            problem,
            pause,
            extra={"event": "webhook.retry", "job": job_id},
        )
        await self.webhooks.retry_in(job_id, pause)

    async def _post(self, client: httpx.AsyncClient, record: JobRecord) -> str | None:
        """None once the receiver answered 2xx, else what went wrong."""
        try:
            target = parse_url(record.callback_url)
            addresses = await anyio.to_thread.run_sync(
                lambda: resolve(target, allow_private=self.settings.webhook_allow_private)
            )
        except RefusedUrl as exc:
            return str(exc)
        body = job_view(record, self.settings.public_url).model_dump_json().encode()
        secret = self.settings.webhook_secret
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(
                secret.get_secret_value() if secret else "", int(time.time()), body
            ),
        }
        extensions = {}
        if target.scheme == "https" and literal_address(target.host) is None:
            extensions["sni_hostname"] = target.host
        try:
            response = await client.post(
                target.url_for(addresses[0]),
                content=body,
                headers=headers,
                extensions=extensions,
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or "connection error"
        if 200 <= response.status_code < 300:
            return None
        return f"the receiver answered {response.status_code}"

    async def _give_up(
        self, job_id: str, record: JobRecord | None, problem: str, attempts: int = 0
    ) -> None:
        log.warning(
            "webhook of job %s undeliverable: %s",
            job_id,
            problem,
            extra={"event": "webhook.undeliverable", "job": job_id},
        )
        await self.webhooks.give_up(
            Undeliverable(
                job=job_id,
                url=record.callback_url if record else "",
                attempts=attempts,
                error=problem[:MAX_ERROR_CHARS],
                at=utc_now(),
            )
        )


def _age(record: JobRecord) -> float:
    """Seconds since the job ended (0 when the time is unknown)."""
    if not record.finished_at:
        return 0.0
    return max(0.0, time.time() - parse_timestamp(record.finished_at).timestamp())


async def run_webhook_sender(deployment: Deployment) -> None:
    """A worker's background task: send due webhooks, forever; Redis trouble is waited out."""
    sender = WebhookSender(
        deployment.settings, deployment.queue, WebhookQueue(deployment.redis, deployment.queue.keys)
    )
    while True:
        try:
            sent = await sender.send_due()
        except RedisError as exc:
            if not is_outage(exc):
                log.exception("webhook sending failed")
            sent = 0
        except Exception:
            log.exception("webhook sending failed")
            sent = 0
        if not sent:
            await anyio.sleep(IDLE_POLL)
