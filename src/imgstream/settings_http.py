"""The settings of the HTTP side: the API server and its limits, webhooks, and who may call
(API keys, rate limits, CORS).

A group of ``config.Settings``, kept apart so each stays readable; only ``Settings`` is
built (it reads the environment). docs/configuration.md and docs/security.md list them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from imgstream.setting_values import MIB, api_keys, origins


class HttpSettings(BaseSettings):
    """The API server, its limits below ASGI, webhooks and access control."""

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

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: Any) -> Any:
        return api_keys(value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        return origins(value)

    @property
    def rate_limited(self) -> bool:
        return self.rate_limit_per_second > 0
