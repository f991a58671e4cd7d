"""Webhooks, the pure part: which callback URLs may be called, how a call is signed and
verified, and when a failed call is tried again.

Promises: only ``http`` and ``https`` URLs without credentials; a host is acceptable only
when every address it resolves to is public (not loopback, private, link-local, shared,
multicast, reserved or otherwise special), unless private targets are allowed; the
signature is ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

SIGNATURE_HEADER = "Imgstream-Signature"
MAX_URL_CHARS = 2048
MAX_BACKOFF = 600.0
"""The longest pause between two tries of one webhook, in seconds."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SPECIAL = tuple(
    ipaddress.ip_network(net)
    for net in ("192.0.0.0/24", "100.64.0.0/10", "64:ff9b:1::/48", "2001::/23", "2001:db8::/32")
)
"""Special-purpose ranges some Python versions call global: IETF protocol assignments,
shared address space, local-use NAT64, IETF protocol assignments (IPv6), documentation."""


class RefusedUrl(ValueError):
    """A callback URL that will not be called; the message says why, for a person."""


@dataclass(frozen=True, slots=True)
class Target:
    """A callback URL taken apart: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str
    """The path and query, as sent in the request line."""

    def url_for(self, address: IPAddress) -> str:
        """The URL with ``address`` in place of the host: connect there, nowhere else."""
        literal = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """The target of ``url``, refused when it is not a plain http(s) URL with a host."""
    if len(url) > MAX_URL_CHARS:
        raise RefusedUrl(f"callback_url is longer than {MAX_URL_CHARS} characters")
    if any(ord(char) <= 0x20 or ord(char) >= 0x7F for char in url):
        raise RefusedUrl("callback_url has spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedUrl(f"callback_url is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedUrl("callback_url must be an http:// or https:// URL")
    if not parts.hostname:
        raise RefusedUrl("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedUrl("callback_url must not carry credentials (user:password@)")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname, port or default, path)


def address_refusal(address: IPAddress) -> str | None:
    """Why a connection to ``address`` is refused, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            reason = address_refusal(embedded)
            return f"{reason} (inside an IPv6 address)" if reason else None
    kinds = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for kind, applies in kinds:
        if applies:
            return f"{address} is a {kind} address"
    if not address.is_global or any(address in net for net in _SPECIAL):
        return f"{address} is not a public address"
    return None


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def resolve(target: Target, *, allow_private: bool) -> list[IPAddress]:
    """Every address ``target``'s host resolves to, refused when any of them is not public
    (unless ``allow_private``). Blocking (DNS): run it in a thread."""
    literal = literal_address(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise RefusedUrl(f"callback_url's host {target.host} does not resolve: {exc}") from None
        addresses = list(
            dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found)
        )
    if not addresses:
        raise RefusedUrl(f"callback_url's host {target.host} has no address")
    if not allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason is not None:
                raise RefusedUrl(
                    f"callback_url's host {target.host} is not public: {reason} "
                    "(IMGSTREAM_WEBHOOK_ALLOW_PRIVATE)"
                )
    return addresses


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Imgstream-Signature`` header value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """What a receiver does: the header signs ``body`` and is at most ``tolerance`` s old."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def backoff(attempt: int, first: float) -> float:
    """Seconds to wait after failed try number ``attempt`` (1, 2, …): doubling, capped."""
    return float(min(MAX_BACKOFF, first * 2 ** min(attempt - 1, 30)))
