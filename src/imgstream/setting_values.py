"""The kinds of value settings take, and how a text from the environment becomes one.

``config.Settings`` declares every setting; the enums of its choices and the parsing of its
lists (API keys, origins) are here, so that the settings read as a list.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import SecretStr

MIB = 1024 * 1024
MIN_API_KEY_CHARS = 16
_API_KEY = re.compile(r"^[A-Za-z0-9._~+/=-]+$")  # RFC 6750 b64token: fits a Bearer header
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


class AppendFsync(StrEnum):
    """How often the private Redis fsyncs its append-only file (the loss window on a crash)."""

    ALWAYS = "always"
    EVERYSEC = "everysec"
    NO = "no"


class StorageKind(StrEnum):
    """Where originals and results live: a local directory, or an S3-compatible bucket."""

    LOCAL = "local"
    S3 = "s3"


class S3AddressingStyle(StrEnum):
    """How the bucket is named in S3 URLs: ``auto`` lets botocore choose (path style with a
    custom endpoint, virtual-hosted on AWS); ``path`` and ``virtual`` force one."""

    AUTO = "auto"
    PATH = "path"
    VIRTUAL = "virtual"


class LogFormat(StrEnum):
    """How log lines look: ``auto`` is JSON, unless stderr is a terminal (then text)."""

    AUTO = "auto"
    JSON = "json"
    TEXT = "text"


def comma_separated(value: Any) -> Any:
    """``"a, b,,c"`` from the environment, or a list from code, as a tuple of non-empty items."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list | tuple):
        return tuple(
            item for item in (i.strip() if isinstance(i, str) else i for i in value) if item != ""
        )
    return value


def api_keys(value: Any) -> Any:
    """API keys from a comma-separated text (or a list), each checked: long enough, and of
    the characters a Bearer header carries. Anything else is returned for pydantic to refuse."""
    keys = comma_separated(value)
    if not isinstance(keys, tuple):
        return keys
    for position, key in enumerate(keys, start=1):
        text = key.get_secret_value() if isinstance(key, SecretStr) else str(key)
        if len(text) < MIN_API_KEY_CHARS or not _API_KEY.fullmatch(text):
            raise ValueError(
                f"API key #{position} must be at least {MIN_API_KEY_CHARS} characters "
                "of A-Z a-z 0-9 . _ ~ + / = -"
            )
    return keys


def origins(value: Any) -> Any:
    """Web origins (``https://example.com``, or ``*``) from a comma-separated text (or a
    list), without a trailing slash."""
    found = comma_separated(value)
    if not isinstance(found, tuple):
        return found
    cleaned = tuple(str(origin).rstrip("/") for origin in found)
    for origin in cleaned:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ValueError(f"{origin!r} is not an origin such as https://example.com")
    return cleaned
