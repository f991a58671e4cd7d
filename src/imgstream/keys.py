"""Every Redis key name of one deployment, and the channel rule, in one place
(docs/wire-format.md lists them).

All keys share the hash tag ``{<prefix>}``, so every script touches a single Redis Cluster
slot. Lua scripts are handed these names (and job ids, channels, statuses) by Python and
never build or parse one themselves.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis key names of one deployment; ``prefix`` is also the Cluster hash tag."""

    prefix: str

    @property
    def stream(self) -> str:
        return f"{{{self.prefix}}}:jobs"

    @property
    def dead(self) -> str:
        return f"{{{self.prefix}}}:dead"

    def job(self, job_id: str) -> str:
        return f"{{{self.prefix}}}:job:{job_id}"

    def channel(self, job_id: str) -> str:
        """The pub/sub channel a job's status changes are announced on: its hash's name."""
        return self.job(job_id)

    def job_of_channel(self, channel: str) -> str:
        """The job id a ``channel`` announces (the inverse of ``channel``)."""
        return channel.removeprefix(self.channel(""))

    def idempotency(self, scope: str) -> str:
        """The record of one ``Idempotency-Key``: ``scope`` digests the client and the key."""
        return f"{{{self.prefix}}}:idempotency:{scope}"

    @property
    def webhooks(self) -> str:
        """Sorted set: ended jobs with a callback URL to call, by when (Redis ms) it is due."""
        return f"{{{self.prefix}}}:webhooks"

    @property
    def webhook_attempts(self) -> str:
        """Hash: job id -> tries of its webhook so far (while it is scheduled)."""
        return f"{{{self.prefix}}}:webhooks:attempts"

    @property
    def webhook_failures(self) -> str:
        """List: the latest undeliverable webhooks, newest first (JSON)."""
        return f"{{{self.prefix}}}:webhooks:undeliverable"

    # Operating (``metrics``, ``monitor``, ``janitor``): see docs/wire-format.md.

    @property
    def expiry(self) -> str:
        return f"{{{self.prefix}}}:expiry"

    @property
    def metrics(self) -> str:
        return f"{{{self.prefix}}}:metrics"

    @property
    def failures(self) -> str:
        return f"{{{self.prefix}}}:failures"

    def rate(self, bucket: int) -> str:
        return f"{{{self.prefix}}}:rate:{bucket}"

    def rate_limit(self, client: str, kind: str = "") -> str:
        """A client's token bucket; ``kind`` ("" for work created, "read") names the limit."""
        kind_part = f"{kind}:" if kind else ""
        return f"{{{self.prefix}}}:ratelimit:{kind_part}{client}"

    @property
    def workers(self) -> str:
        return f"{{{self.prefix}}}:workers"

    @property
    def storage(self) -> str:
        return f"{{{self.prefix}}}:storage"

    @property
    def janitor_lock(self) -> str:
        return f"{{{self.prefix}}}:janitor:lock"

    @property
    def janitor_due(self) -> str:
        return f"{{{self.prefix}}}:janitor:due"
