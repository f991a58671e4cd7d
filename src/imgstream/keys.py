"""Every Redis key name of one deployment, and the channel rule, in one place
(docs/wire-format.md lists them).

Partitions (``IMGSTREAM_PARTITIONS``). Partition 0 keeps the hash tag ``{<prefix>}``, so a
deployment with one partition has exactly the layout it always had; partition ``p >= 1``
uses the tag ``{<prefix>:p}``. A partition's keys are its jobs stream, dead-letter stream,
expiry set, metrics hash, and the hashes (and channels) of its jobs: everything one script
touches lives under one tag, so every script touches one Redis Cluster slot, and the
partitions spread over the cluster's masters. Keys no script shares with a partition's
(presence, storage figures, janitor lock, rate buckets, rate limits, recent failures, the
undeliverable-webhook list) stay under ``{<prefix>}``. With ``IMGSTREAM_STREAM_PER_OPERATION``
a partition holds one jobs stream per operation (``lane``), all under its tag.

Colocation rule, for every key added later: a key that a script updates together with a job
(an idempotency record, a cached result, a batch member...) must be named with that job's
partition tag (``Keys.partition(p).tag``, or ``Keys.partition_of(job_id)``), never the
deployment-wide one. A key only read or written on its own may stay under ``{<prefix>}``.

A job's partition is written in its id (``partition_of``), so any process finds it from the
id alone. Lua scripts are handed these names (and job ids, channels, statuses) by Python
and never build or parse one themselves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PARTITION_VERSION_NIBBLE = "8"
"""The UUID version digit (index 12 of the 32 hex digits) of an id that names its partition:
RFC 9562's version 8 ("custom"), whose first 4 hex digits are the partition number. Ids of
any other version (the UUID4 ids of a one-partition deployment) belong to partition 0."""

MAX_PARTITIONS = 0x10000


def partition_of(job_id: str) -> int:
    """The partition a job belongs to, from its id alone (see ``PARTITION_VERSION_NIBBLE``)."""
    if len(job_id) == 32 and job_id[12] == PARTITION_VERSION_NIBBLE:
        try:
            return int(job_id[:4], 16)
        except ValueError:
            return 0
    return 0


def partition_of_scope(scope: str, partitions: int) -> int:
    """The partition of the job an idempotency ``scope`` creates: fixed by the scope alone, so
    every API instance looks the key up where ``enqueue.lua`` wrote it, with that job."""
    if partitions <= 1:
        return 0
    return int(hashlib.sha256(scope.encode()).hexdigest()[:8], 16) % partitions


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis key names of one deployment (``prefix``) as seen from one of its partitions."""

    prefix: str
    part: int = 0
    """The partition whose stream, dead letters, expiry set and metrics these name."""

    @property
    def tag(self) -> str:
        """This partition's hash tag, braces included."""
        return f"{{{self.prefix}}}" if self.part == 0 else f"{{{self.prefix}:{self.part}}}"

    @property
    def base(self) -> str:
        """The deployment-wide hash tag (partition 0's), for keys outside any partition."""
        return f"{{{self.prefix}}}"

    def partition(self, part: int) -> Keys:
        """The keys of partition ``part`` of the same deployment."""
        return Keys(self.prefix, part)

    def of_job(self, job_id: str) -> Keys:
        """The keys of the partition ``job_id`` belongs to."""
        return self.partition(partition_of(job_id))

    @property
    def stream(self) -> str:
        """This partition's jobs stream (the only one unless streams are per operation)."""
        return f"{self.tag}:jobs"

    def lane(self, operation: str) -> str:
        """This partition's jobs stream of one lane: ``operation`` ("" for the one stream of a
        deployment without ``IMGSTREAM_STREAM_PER_OPERATION``, which is ``stream``)."""
        return f"{self.stream}:{operation}" if operation else self.stream

    @property
    def dead(self) -> str:
        return f"{self.tag}:dead"

    def job(self, job_id: str) -> str:
        """A job's hash, under the tag of the job's own partition (whatever ``part`` is)."""
        return f"{self.of_job(job_id).tag}:job:{job_id}"

    def channel(self, job_id: str) -> str:
        """The pub/sub channel a job's status changes are announced on: its hash's name."""
        return self.job(job_id)

    def job_of_channel(self, channel: str) -> str:
        """The job id a ``channel`` announces (the inverse of ``channel``)."""
        return channel.rpartition(":job:")[2]

    def idempotency(self, scope: str) -> str:
        """The record of one ``Idempotency-Key`` (``scope`` digests the client and the key),
        under this partition's tag: ``enqueue.lua`` writes it with the job, so ``scope``
        picks the job's partition (``partition_of_scope``)."""
        return f"{self.tag}:idempotency:{scope}"

    def batch(self, batch_id: str) -> str:
        """A batch's hash. No script updates it with a job (its jobs may live in any
        partition), so it stays under the deployment-wide tag."""
        return f"{self.base}:batch:{batch_id}"

    @property
    def open_batches(self) -> str:
        """Set: the batches that had a job not yet ended when last looked at. The janitor
        keeps each alive until its last job has ended (``batch_queue.BatchKeeper``)."""
        return f"{self.base}:batches:open"

    def batch_idempotency(self, scope: str) -> str:
        """The record of one ``Idempotency-Key`` sent to ``POST /api/batches``."""
        return f"{self.base}:idempotency:batch:{scope}"

    @property
    def webhooks(self) -> str:
        """Sorted set: this partition's ended jobs with a callback URL to call, by when (Redis
        ms) it is due (``finish.lua`` adds a job with its outcome; senders poll each)."""
        return f"{self.tag}:webhooks"

    @property
    def webhook_attempts(self) -> str:
        """Hash: job id -> tries of its webhook so far (while it is scheduled)."""
        return f"{self.tag}:webhooks:attempts"

    @property
    def webhook_failures(self) -> str:
        """List: the latest undeliverable webhooks, newest first (JSON)."""
        return f"{{{self.prefix}}}:webhooks:undeliverable"

    # The result cache and shared files (``cache``): never in a script with a job's keys.

    def cached(self, content_key: str) -> str:
        """Hash: the result fields of the finished job whose result is stored as
        ``content_key`` (a result cache entry)."""
        return f"{self.base}:cache:{content_key}"

    def references(self, name: str) -> str:
        """Sorted set: the jobs that use the shared file(s) ``name``, by when (Unix s) each
        began to."""
        return f"{self.base}:shared:{name}"

    def retiring(self, name: str) -> str:
        """String with a lease: the janitor is deleting the shared file(s) ``name``."""
        return f"{self.base}:shared:{name}:retiring"

    @property
    def shared(self) -> str:
        """Sorted set: every shared file's name, by when (Unix s) the janitor looks at it next."""
        return f"{self.base}:shared"

    # Operating (``job_counters``, ``fleet_snapshot``, ``janitor``): see docs/wire-format.md.

    @property
    def expiry(self) -> str:
        return f"{self.tag}:expiry"

    @property
    def metrics(self) -> str:
        """This partition's counters (summed over partitions on read)."""
        return f"{self.tag}:metrics"

    @property
    def failures(self) -> str:
        return f"{self.base}:failures"

    def rate(self, bucket: int) -> str:
        return f"{self.base}:rate:{bucket}"

    def rate_limit(self, client: str, kind: str = "") -> str:
        """A client's token bucket; ``kind`` ("" for work created, "read") names the limit."""
        kind_part = f"{kind}:" if kind else ""
        return f"{self.base}:ratelimit:{kind_part}{client}"

    @property
    def workers(self) -> str:
        return f"{self.base}:workers"

    @property
    def storage(self) -> str:
        return f"{self.base}:storage"

    @property
    def janitor_lock(self) -> str:
        return f"{self.base}:janitor:lock"

    @property
    def janitor_due(self) -> str:
        return f"{self.base}:janitor:due"
