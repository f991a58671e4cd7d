"""Content keys: what names a result by what it is made of, for the result cache and ETags.

A result is fixed by the original's bytes, the canonical steps, the output options and the
encoder that renders them (libvips's and zlib's versions and ``RENDER_VERSION``). Two jobs
with equal keys have byte-equal results, so the key is the result's strong ``ETag`` and its
name in the result cache. Pure, but for reading libvips's version once.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from functools import cache
from typing import BinaryIO

import pyvips

from imgstream.operations import JobSpec

RENDER_VERSION = 2
"""Raise whenever imgstream's own rendering changes its output for the same request (a new
default, a different resampling kernel, another encoder setting), so results cached by
earlier code are never served for it. 2: tiny PNGs deflated by zlib (``tiny``)."""

_CHUNK = 1024 * 1024


@cache
def encoder_version() -> str:
    """The libvips and the zlib (tiny PNGs, ``tiny``) this process renders with, and
    ``RENDER_VERSION``."""
    vips = ".".join(str(pyvips.version(part)) for part in range(3))
    return f"libvips {vips}; zlib {zlib.ZLIB_RUNTIME_VERSION}; imgstream render {RENDER_VERSION}"


def content_key(original_sha256: str, spec: JobSpec, encoder: str | None = None) -> str:
    """The key (64 hex digits) of rendering the original whose SHA-256 is ``original_sha256``
    as ``spec`` says, with ``encoder`` (this process's, by default)."""
    canonical = json.dumps(
        {
            "original": original_sha256,
            "operations": json.loads(spec.operations_json()),
            "output": spec.output_fields(),
            "encoder": encoder if encoder is not None else encoder_version(),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def etag(key: str) -> str:
    """The strong ``ETag`` of a result with content key ``key``."""
    return f'"{key}"'


def matches(if_none_match: str | None, key: str) -> bool:
    """Whether an ``If-None-Match`` header names the result of ``key`` (weak comparison, as
    RFC 9110 asks for this header; ``*`` matches any result)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag(key):
            return True
    return False


def sha256_of(source: BinaryIO | bytes) -> str:
    """SHA-256 (hex) of ``source``: for an original whose producer did not give its hash."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()
