"""The settings of where a deployment keeps things: its files (a directory, or an S3
bucket) and its Redis (the client each process opens, the partitions and lanes of its streams).

Two groups of ``config.Settings``, kept apart so each stays readable; only ``Settings`` is
built (it reads the environment), these only hold fields, their checks and what follows
from them. docs/configuration.md lists every one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from imgstream.keys import MAX_PARTITIONS
from imgstream.setting_values import MIB, S3AddressingStyle, StorageKind, comma_separated
from imgstream.steps import OPERATION_NAMES

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class StorageSettings(BaseSettings):
    """Where originals and results live: a directory, or a bucket (docs/storage.md)."""

    data_dir: Path = Field(default=Path("./data"), description="Originals, results, private Redis.")

    # Object storage (docs/storage.md). Credentials and region: the standard AWS chain.
    storage: StorageKind = Field(
        default=StorageKind.LOCAL,
        description="local: files under IMGSTREAM_DATA_DIR; s3: objects in IMGSTREAM_S3_BUCKET.",
    )
    s3_bucket: str = Field(
        default="",
        pattern=r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="The bucket (it must exist; imgstream never creates it).",
    )
    s3_endpoint_url: str = Field(
        default="",
        pattern=r"^$|^https?://\S+$",
        description="S3 endpoint of a self-hosted server; empty: AWS.",
    )
    s3_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9!_.*'()/-]{0,200}$",
        description="Key prefix inside the bucket (a trailing / is added); empty: none.",
    )
    s3_presign: bool = Field(
        default=False,
        description="Answer result downloads with a 307 redirect to a presigned URL instead of "
        "streaming the object through the API.",
    )
    s3_presign_ttl: int = Field(
        default=300, ge=1, le=7 * 24 * 3600, description="Seconds a presigned URL stays valid."
    )
    s3_multipart_threshold: int = Field(
        default=8 * MIB,
        ge=5 * MIB,
        le=5 * 1024 * MIB,
        description="Uploads of this many bytes or more go to the bucket in parts.",
    )
    s3_part_bytes: int = Field(
        default=8 * MIB,
        ge=5 * MIB,
        le=5 * 1024 * MIB,
        description="Size of one part of a multipart upload (at most 4 are held in memory).",
    )
    s3_addressing_style: S3AddressingStyle = S3AddressingStyle.AUTO
    s3_timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds to connect to, or wait for a read from, the S3 endpoint.",
    )
    s3_max_connections: int = Field(
        default=20, ge=1, le=1000, description="Connections in a process's S3 pool."
    )

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> StorageSettings:
        if self.storage is StorageKind.S3 and not self.s3_bucket:
            raise ValueError("IMGSTREAM_STORAGE=s3 needs IMGSTREAM_S3_BUCKET (an existing bucket)")
        return self

    @field_validator("s3_prefix")
    @classmethod
    def _prefix_as_folder(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()


class RedisSettings(BaseSettings):
    """The Redis client of each process, and the layout of the streams every process of a
    deployment must agree on."""

    # Which Redis, and the names in it.
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "IMGSTREAM_REDIS_URL"),
        description="Redis to use. Unset: `up` starts a private one, `api`/`worker` use localhost.",
    )
    key_prefix: str = Field(
        default="imgstream",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Common prefix of every Redis key; also the Redis Cluster hash tag.",
    )
    group: str = Field(default="imgstream-workers", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    # Redis client of each process.
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL names one node of a Redis Cluster: every process uses redis-py's "
        "cluster client (slots discovered from that node, MOVED/ASK followed).",
    )
    partitions: int = Field(
        default=1,
        ge=1,
        le=MAX_PARTITIONS,
        description="Job streams, each under its own hash tag with its jobs, dead letters, "
        "expiry set, metrics and webhook schedule, so they spread over a cluster's masters. "
        "1 is the single-stream layout. Every process of a deployment must agree on it.",
    )
    stream_per_operation: bool = Field(
        default=False,
        description="One stream per operation (lane) in each partition; a chain goes to the "
        "lane of its heaviest step (docs/wire-format.md). Every process must agree on it.",
    )
    worker_operations: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="With IMGSTREAM_STREAM_PER_OPERATION, the lanes a worker serves, comma "
        "separated (`imgstream worker --operations`); empty: all of them.",
    )
    redis_wait_replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Replicas that must acknowledge each enqueue and each final status write "
        "(Redis WAIT) before it counts; 0: none (a master's crash may lose the last writes).",
    )
    redis_wait_timeout: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds an enqueue or final write waits for IMGSTREAM_REDIS_WAIT_REPLICAS "
        "acknowledgements; an upload not acknowledged in time answers 503 replication_lagging.",
    )
    redis_max_connections: int = Field(
        default=50, ge=2, le=10_000, description="Connections in a process's Redis pool."
    )
    redis_pool_wait: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Seconds a request waits for a free Redis connection before answering 503.",
    )
    redis_timeout: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds a Redis command may take before it counts "
        "as an outage (a frozen Redis answers 503, not a hang).",
    )
    allow_eviction: bool = Field(
        default=False,
        description="Run against a Redis whose maxmemory-policy may evict keys "
        "(loses accepted jobs). Off: the API is not ready and workers refuse to start.",
    )
    ready_timeout: float = Field(
        default=0.8, gt=0, le=30, description="Seconds /readyz may spend on its checks."
    )

    @model_validator(mode="after")
    def _wait_within_timeout(self) -> RedisSettings:
        if self.redis_wait_replicas and self.redis_wait_timeout >= self.redis_timeout:
            raise ValueError(
                "IMGSTREAM_REDIS_WAIT_TIMEOUT must be shorter than IMGSTREAM_REDIS_TIMEOUT "
                "(a WAIT outlasting the command timeout would read as an outage)"
            )
        return self

    @model_validator(mode="after")
    def _lanes_for_worker_operations(self) -> RedisSettings:
        if self.worker_operations and not self.stream_per_operation:
            raise ValueError(
                "IMGSTREAM_WORKER_OPERATIONS (imgstream worker --operations) needs "
                "IMGSTREAM_STREAM_PER_OPERATION=true: without it every operation shares one stream"
            )
        return self

    @field_validator("worker_operations", mode="before")
    @classmethod
    def _split_operations(cls, value: Any) -> Any:
        names = comma_separated(value)
        if not isinstance(names, tuple):
            return names
        unknown = [name for name in names if name not in OPERATION_NAMES]
        if unknown:
            raise ValueError(
                f"unknown operation {unknown[0]!r}; use some of {', '.join(OPERATION_NAMES)}"
            )
        return tuple(dict.fromkeys(names))

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def served_lanes(self) -> tuple[str, ...]:
        """The lanes a worker of these settings reads: every operation's, or the ones
        ``worker_operations`` names; ("",) is the one stream shared by all operations."""
        if not self.stream_per_operation:
            return ("",)
        return self.worker_operations or OPERATION_NAMES

    @property
    def all_lanes(self) -> tuple[str, ...]:
        """Every lane of the deployment (what producers, stats and the janitor see)."""
        return OPERATION_NAMES if self.stream_per_operation else ("",)
