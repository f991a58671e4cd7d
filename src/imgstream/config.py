"""All configuration, read once from the environment into one typed object.

Nothing else in the package reads ``os.environ``: the process entry points build a
``Settings`` and pass it down. Every limit has a safe default; the README lists them all.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
MIB = 1024 * 1024


class AppendFsync(StrEnum):
    """How often the private Redis fsyncs its append-only file (the loss window on a crash)."""

    ALWAYS = "always"
    EVERYSEC = "everysec"
    NO = "no"


class LogFormat(StrEnum):
    """How log lines look: ``auto`` is JSON, unless stderr is a terminal (then text)."""

    AUTO = "auto"
    JSON = "json"
    TEXT = "text"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMGSTREAM_", extra="ignore", frozen=True)

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

    # HTTP.
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    public_url: str = Field(default="", description="Base URL put in links; empty: relative.")
    sse_keepalive: float = Field(
        default=15.0, gt=0, le=300, description="Seconds between keep-alive comments on /events."
    )

    # Workers.
    concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    read_batch: int = Field(default=16, ge=1, le=1000, description="Entries per XREADGROUP.")
    block_ms: int = Field(default=2000, ge=10, le=60_000)
    vips_concurrency: int = Field(default=1, ge=0, le=64, description="libvips threads per worker.")
    vips_cache_mb: int = Field(default=64, ge=0, le=4096)

    # Lifecycle.
    result_ttl: int = Field(default=24 * 3600, ge=60, description="Seconds a finished job is kept.")
    shutdown_grace: float = Field(default=30.0, ge=0, description="Seconds to finish jobs on stop.")
    max_backlog: int = Field(default=10_000, ge=0, description="Outstanding jobs before 429.")

    # Reliability.
    visibility_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds an entry may sit idle before another worker takes it.",
    )
    max_attempts: int = Field(default=3, ge=1, le=100)
    job_timeout: float = Field(default=60.0, gt=0, description="Seconds one attempt may run.")
    retry_backoff: float = Field(default=0.5, ge=0, description="First retry pause; doubles.")
    consumer_idle_ttl: float = Field(
        default=3600.0, gt=0, description="Seconds before an idle, empty consumer is forgotten."
    )

    # Upload and image limits.
    max_upload_bytes: int = Field(default=25 * MIB, ge=1024)
    max_pixels: int = Field(default=50_000_000, ge=1)
    max_dimension: int = Field(default=20_000, ge=1, le=10_000_000)
    max_frames: int = Field(default=100, ge=1)
    max_steps: int = Field(default=10, ge=1, le=100)
    max_sigma: float = Field(default=100.0, gt=0, le=1000)

    # Redis persistence of the private server started by `imgstream up`.
    appendfsync: AppendFsync = AppendFsync.EVERYSEC

    log_level: str = Field(default="INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")

    # Operating: logs, health, retention.
    log_format: LogFormat = Field(
        default=LogFormat.AUTO, description="auto: JSON lines, or text on a terminal."
    )
    ready_worker_age: float = Field(
        default=60.0,
        ge=0,
        description="/readyz fails when no worker was seen for this many seconds (0: no check).",
    )
    janitor_interval: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between retention sweeps across the fleet (0: only `imgstream gc`).",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL
