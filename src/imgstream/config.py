"""All configuration, read once from the environment into one typed object.

Nothing else in the package reads ``os.environ``: the process entry points build a
``Settings`` and pass it down. Every limit has a safe default; docs/configuration.md lists them all.
The settings of where things live (``settings_backends``) and of the HTTP side
(``settings_http``) are groups defined apart; ``Settings`` holds them all, with the workers',
the jobs' lifecycle and limits, and operating.
"""

from __future__ import annotations

import os

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from imgstream.limits import DEFAULT_LIMITS, LIMIT_NAMES, Limits
from imgstream.setting_values import MIB, AppendFsync, LogFormat
from imgstream.settings_backends import RedisSettings, StorageSettings
from imgstream.settings_http import HttpSettings


class Settings(StorageSettings, RedisSettings, HttpSettings):
    # hide_input_in_errors: a refused setting must not print an API key into a log.
    model_config = SettingsConfigDict(
        env_prefix="IMGSTREAM_", extra="ignore", frozen=True, hide_input_in_errors=True
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
    malloc_arenas: int = Field(
        default=2,
        ge=0,
        le=64,
        description="glibc malloc arenas per API and worker process (0: glibc's default).",
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
    max_tiny_pixels: int = Field(
        default=DEFAULT_LIMITS.max_tiny_pixels,
        ge=0,
        le=1_000_000,
        description="Largest source (in pixels, by its header) rendered in memory with numpy "
        "when every step is grayscale, crop, flip or a quarter turn, and it is plain 8-bit sRGB "
        "or grey: one decode and one encode instead of a libvips operation per step. 0: never.",
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

    @property
    def limits(self) -> Limits:
        """The operator's bounds on what a job may ask for and what a source may be."""
        return Limits(**{name: getattr(self, name) for name in LIMIT_NAMES})
