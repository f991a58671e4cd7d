"""All configuration, read once from the environment into one typed object.

Nothing else in the package reads ``os.environ``: the process entry points build a
``Settings`` and pass it down. Every limit has a safe default; docs/configuration.md lists them all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from imgstream.keys import MAX_PARTITIONS
from imgstream.limits import DEFAULT_LIMITS, LIMIT_NAMES, Limits
from imgstream.setting_values import (
    MIB,
    AppendFsync,
    LogFormat,
    S3AddressingStyle,
    StorageKind,
    api_keys,
    comma_separated,
    origins,
)
from imgstream.steps import OPERATION_NAMES

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting must not print an API key into a log.
    model_config = SettingsConfigDict(
        env_prefix="IMGSTREAM_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # Where things live.
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "IMGSTREAM_REDIS_URL"),
        description="Redis to use. Unset: `up` starts a private one, `api`/`worker` use localhost.",
    )
    data_dir: Path = Field(default=Path("./data"), description="Originals, results, private Redis.")
    key_prefix: str = Field(
        default="imgstream",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Common prefix of every Redis key; also the Redis Cluster hash tag.",
    )
    group: str = Field(default="imgstream-workers", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

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

    # HTTP.
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    public_url: str = Field(default="", description="Base URL put in links; empty: relative.")
    sse_keepalive: float = Field(
        default=15.0, gt=0, le=300, description="Seconds between keep-alive comments on /events."
    )
    max_streams: int = Field(
        default=1000, ge=1, le=1_000_000, description="Event streams open at once per API process."
    )
    max_streams_per_client: int = Field(
        default=300, ge=1, le=1_000_000, description="Event streams one key (or IP) may hold open."
    )

    # HTTP server limits (docs/security.md): each refusal is JSON and logged.
    http_max_connections: int = Field(
        default=2048,
        ge=1,
        le=1_000_000,
        description="Open connections per API process; 503 past it.",
    )
    http_max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        le=16 * MIB,
        description="Request line and headers; 431 past it.",
    )
    http_max_headers: int = Field(
        default=100, ge=8, le=10_000, description="Header fields per request; 431 past it."
    )
    http_max_url_bytes: int = Field(
        default=8 * 1024,
        ge=256,
        le=MIB,
        description="Request target (path and query); 414 past it.",
    )
    http_header_timeout: float = Field(
        default=10.0, gt=0, le=600, description="Seconds to send a request's headers; 408 past it."
    )
    http_keepalive_timeout: int = Field(
        default=5, ge=1, le=600, description="Seconds an idle keep-alive connection stays open."
    )
    http_min_body_rate: int = Field(
        default=1024,
        ge=0,
        le=1024 * MIB,
        description="Bytes/s a request body must average over "
        "each IMGSTREAM_HTTP_BODY_WINDOW; 408 below it (0: no minimum).",
    )
    http_body_window: float = Field(
        default=10.0, gt=0, le=600, description="Seconds over which the body rate is judged."
    )

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

    # Workers.
    concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    read_batch: int = Field(default=16, ge=1, le=1000, description="Entries per XREADGROUP.")
    block_ms: int = Field(default=2000, ge=10, le=60_000)
    vips_concurrency: int = Field(default=1, ge=0, le=64, description="libvips threads per worker.")
    vips_cache_mb: int = Field(
        default=0,
        ge=0,
        le=4096,
        description="libvips operation cache per worker; jobs never share operations, so off.",
    )

    # Lifecycle.
    result_ttl: int = Field(default=24 * 3600, ge=60, description="Seconds a finished job is kept.")
    shutdown_grace: float = Field(default=30.0, ge=0, description="Seconds to finish jobs on stop.")
    max_backlog: int = Field(default=10_000, ge=0, description="Outstanding jobs before 429.")
    result_cache: bool = Field(
        default=True,
        description="Serve a job whose original bytes, steps, output options and encoder equal "
        "a finished job's from that job's result at once (done, no worker); originals and "
        "cached results are stored once per content hash.",
    )
    idempotency_ttl: int = Field(
        default=24 * 3600,
        ge=1,
        le=30 * 24 * 3600,
        description="Seconds an Idempotency-Key names its job: a repeat within it creates nothing.",
    )

    # Reliability.
    visibility_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds an entry may sit idle before another worker takes it.",
    )
    max_attempts: int = Field(default=3, ge=1, le=100)
    job_timeout: float = Field(default=60.0, gt=0, description="Seconds one attempt may run.")
    job_backstop: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds past the job timeout a render that libvips cannot stop (blocked in "
        "a read) may take before its worker process exits with code 70; the supervisor starts "
        "a fresh one and the job is recovered like a crashed worker's.",
    )
    retry_backoff: float = Field(default=0.5, ge=0, description="First retry pause; doubles.")
    consumer_idle_ttl: float = Field(
        default=3600.0, gt=0, description="Seconds before an idle, empty consumer is forgotten."
    )

    # Upload and image limits.
    max_upload_bytes: int = Field(default=25 * MIB, ge=1024)
    batch_max_files: int = Field(
        default=100, ge=1, le=1000, description="Images one POST /api/batches may carry."
    )
    batch_max_bytes: int = Field(
        default=256 * MIB,
        ge=1024,
        description="Largest POST /api/batches body (all its images together); each image "
        "also stays within IMGSTREAM_MAX_UPLOAD_BYTES.",
    )
    min_free_bytes: int = Field(
        default=64 * MIB,
        ge=0,
        description="Free space the data directory keeps; below it "
        "uploads get 507 and /readyz says so.",
    )
    max_pixels: int = Field(default=DEFAULT_LIMITS.max_pixels, ge=1)
    max_dimension: int = Field(default=DEFAULT_LIMITS.max_dimension, ge=1, le=10_000_000)
    max_frames: int = Field(default=DEFAULT_LIMITS.max_frames, ge=1)
    max_luma_pixels: int = Field(
        default=DEFAULT_LIMITS.max_luma_pixels,
        ge=0,
        le=1_000_000_000,
        description="Largest JPEG (in pixels, after shrink-on-load) whose grayscale is decoded "
        "as its luma plane alone, held whole in memory (one byte a pixel; 3-4x cheaper); larger "
        "ones go through libvips in strips. 0: never.",
    )
    max_steps: int = Field(default=DEFAULT_LIMITS.max_steps, ge=1, le=100)
    max_sigma: float = Field(default=DEFAULT_LIMITS.max_sigma, gt=0, le=1000)
    placeholders: bool = Field(
        default=True,
        description="Compute each result's BlurHash, ThumbHash and dominant colour (from a "
        "32 px copy).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The key `imgstream submit` / `status` send (when the API requires keys).",
    )
    allow_untrusted_formats: bool = Field(
        default=False,
        description="Accept SVG (and PDF where libvips has it): formats that can reference "
        "outside resources. Off: refused with 415.",
    )

    # Webhooks (docs/api.md#webhooks, docs/security.md).
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of every webhook's Imgstream-Signature (HMAC-SHA256); unset: "
        "callback_url is refused with 422, since an unsigned call proves nothing.",
    )
    webhook_retry_for: float = Field(
        default=3600.0,
        ge=0,
        le=7 * 24 * 3600,
        description="Seconds a webhook is retried (exponential backoff) after the job ended; "
        "then it is listed as undeliverable.",
    )
    webhook_backoff: float = Field(
        default=2.0, gt=0, le=3600, description="First webhook retry pause; doubles, to 10 min."
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds one webhook call may take, in all."
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow callback URLs whose host is loopback, private, link-local or "
        "otherwise not public (tests, a private network). Off: refused with 422.",
    )

    # Access control and abuse limits (docs/security.md).
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated API keys; when set, every /api call needs one (Bearer).",
    )
    rate_limit_per_second: float = Field(
        default=20.0,
        ge=0,
        le=1_000_000,
        description="Jobs (and other POSTs under /api) per second per key or IP; 0: off.",
    )
    rate_limit_burst: int = Field(
        default=100, ge=1, le=1_000_000, description="Jobs a client may create at once."
    )
    read_rate_limit_per_second: float = Field(
        default=0.0,
        ge=0,
        le=1_000_000,
        description="Reads (GET under /api) per second per key or IP; 0 (default): unlimited.",
    )
    read_rate_limit_burst: int = Field(
        default=1000, ge=1, le=1_000_000, description="Reads a client may make at once."
    )
    admin_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated operator keys: stats with job details, dead letters, "
        "metrics; they also work as API keys.",
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Comma-separated origins allowed by CORS; empty: no CORS."
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies trusted for X-Forwarded-For (the client IP of per-IP rate limits).",
    )

    # Redis persistence of the private server started by `imgstream up`.
    appendfsync: AppendFsync = AppendFsync.EVERYSEC

    log_level: str = Field(default="INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")

    # Operating: logs, health, retention.
    log_format: LogFormat = Field(
        default=LogFormat.AUTO, description="auto: JSON lines, or text on a terminal."
    )
    startup_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds `up` waits for the API to answer and a worker to read.",
    )
    ready_worker_age: float = Field(
        default=60.0,
        ge=0,
        description="/readyz fails when no worker was seen for this many seconds (0: no check).",
    )
    temporary_age: float = Field(
        default=300.0,
        ge=10,
        description="Seconds after which an untouched temporary file of a dead writer is removed.",
    )
    orphan_age: float = Field(
        default=900.0,
        ge=60,
        description="Seconds after which a stored file no job names "
        "(a crash between storing and queueing) is removed.",
    )
    janitor_interval: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between retention sweeps across the fleet (0: only `imgstream gc`).",
    )

    @model_validator(mode="after")
    def _wait_within_timeout(self) -> Settings:
        if self.redis_wait_replicas and self.redis_wait_timeout >= self.redis_timeout:
            raise ValueError(
                "IMGSTREAM_REDIS_WAIT_TIMEOUT must be shorter than IMGSTREAM_REDIS_TIMEOUT "
                "(a WAIT outlasting the command timeout would read as an outage)"
            )
        return self

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> Settings:
        if self.storage is StorageKind.S3 and not self.s3_bucket:
            raise ValueError("IMGSTREAM_STORAGE=s3 needs IMGSTREAM_S3_BUCKET (an existing bucket)")
        return self

    @model_validator(mode="after")
    def _lanes_for_worker_operations(self) -> Settings:
        if self.worker_operations and not self.stream_per_operation:
            raise ValueError(
                "IMGSTREAM_WORKER_OPERATIONS (imgstream worker --operations) needs "
                "IMGSTREAM_STREAM_PER_OPERATION=true: without it every operation shares one stream"
            )
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

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: Any) -> Any:
        return api_keys(value)

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

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        return origins(value)

    @property
    def rate_limited(self) -> bool:
        return self.rate_limit_per_second > 0

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

    @property
    def limits(self) -> Limits:
        """The operator's bounds on what a job may ask for and what a source may be."""
        return Limits(**{name: getattr(self, name) for name in LIMIT_NAMES})
