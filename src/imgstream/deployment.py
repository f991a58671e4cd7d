"""One deployment as a process sees it: its Redis connection (scripts registered once), the
job queue, metrics, dead letters, presence and storage, built in one place from its
settings. The API, the worker, the janitor, the CLI and ``imgstream stats`` all start here,
so the wiring (which client, which keys, which group) cannot differ between them.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from imgstream.cache import SharedFiles
from imgstream.config import Settings
from imgstream.connection import connect, connect_from
from imgstream.deadletters import DeadLetters
from imgstream.heartbeats import Presence
from imgstream.job_counters import JobMetrics
from imgstream.keys import Keys
from imgstream.queue import JobQueue
from imgstream.queue_layout import Replication
from imgstream.setting_values import StorageKind
from imgstream.storage import LocalStorage, Storage


@dataclass(frozen=True, slots=True)
class Deployment:
    settings: Settings
    redis: Redis
    queue: JobQueue
    metrics: JobMetrics
    dead_letters: DeadLetters
    presence: Presence
    storage: Storage
    shared: SharedFiles

    @classmethod
    def open(
        cls, settings: Settings, *, blocking_ms: int = 0, one_shot: bool = False
    ) -> Deployment:
        """The deployment ``settings`` name. A service process (API, worker) gets the bounded,
        time-limited client of ``connect_from`` (``blocking_ms`` more per command for one that
        blocks reading the stream); a ``one_shot`` command (CLI, stats) a plain client."""
        if one_shot:
            redis = connect(settings.effective_redis_url, cluster=settings.redis_cluster)
        else:
            redis = connect_from(settings, blocking_ms=blocking_ms)
        keys = Keys(settings.key_prefix)
        return cls(
            settings=settings,
            redis=redis,
            queue=JobQueue(
                redis,
                keys,
                settings.group,
                partitions=settings.partitions,
                lanes=settings.all_lanes,
                served=settings.served_lanes,
                replication=replication_of(settings),
            ),
            metrics=JobMetrics(redis, keys),
            dead_letters=DeadLetters(
                redis,
                keys,
                partitions=settings.partitions,
                per_operation=settings.stream_per_operation,
            ),
            presence=Presence(redis, keys),
            storage=open_storage(settings),
            shared=SharedFiles(redis, keys, first_look=settings.orphan_age),
        )

    @property
    def keys(self) -> Keys:
        return self.queue.keys

    async def aclose(self) -> None:
        await self.redis.aclose()


def replication_of(settings: Settings) -> Replication:
    """The replicas a deployment's lasting writes wait for (``IMGSTREAM_REDIS_WAIT_*``)."""
    return Replication(settings.redis_wait_replicas, round(settings.redis_wait_timeout * 1000))


def open_storage(settings: Settings) -> Storage:
    """The backend ``IMGSTREAM_STORAGE`` names; boto3 is loaded only for ``s3``. Raises
    ``StorageUnavailable`` when the S3 client cannot even be set up (the bucket itself is
    checked by ``Storage.check`` at start-up)."""
    if settings.storage is StorageKind.S3:
        from imgstream.s3_storage import S3Storage

        return S3Storage(settings)
    return LocalStorage(settings.data_dir)
