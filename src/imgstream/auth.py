"""Access control: API keys, and which jobs a caller may see.

Off unless ``IMGSTREAM_API_KEYS`` or ``IMGSTREAM_ADMIN_KEYS`` is set. Then every request
under ``/api`` (and ``/metrics``) must carry ``Authorization: Bearer <key>``: the gate
(``middleware.api_keys``) answers ``401`` before the body is read, so an unauthenticated
upload costs neither disk nor a decode, and a route added later is covered without doing
anything. The one exception is
``PUBLIC_API_PATHS``: the operator's limits, which the web page reads before it has a key.
A job is visible only to the key that created it (``404`` to others). Operator keys
(``IMGSTREAM_ADMIN_KEYS``) are keys too, and more: they alone see every job, other callers'
failures and dead letters in the stats, retry dead letters and read ``/metrics`` (``403``
for an ordinary key).

Keys are never stored: a job's ``owner`` field holds the SHA-256 fingerprint of its key, and a
presented key is compared by fingerprint with ``hmac.compare_digest``, against every configured
key, so the time taken says nothing about how much of a key was right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

API_PATH = "/api"
PUBLIC_API_PATHS = frozenset({"/api/limits"})
OPERATOR_PATHS = frozenset({"/metrics"})
"""Paths outside ``/api`` that the gate covers too: they need an operator key."""
CHALLENGE = 'Bearer realm="imgstream"'
CALLER_STATE_KEY = "imgstream_caller"
"""Where ``middleware.api_keys`` leaves the caller it found, in the request's state."""


def fingerprint(key: str) -> str:
    """What a job records about the key that created it: never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_api_path(path: str) -> bool:
    return path == API_PATH or path.startswith(API_PATH + "/")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: ``owner`` is stored with their jobs ("" while access control is off)."""

    owner: str
    restricted: bool
    operator: bool = False

    @property
    def sees_everything(self) -> bool:
        """Access control is off, or this is an operator."""
        return not self.restricted or self.operator

    def may_see(self, owner: str) -> bool:
        """Whether a job recorded with ``owner`` is this caller's to see."""
        if self.sees_everything:
            return True
        return hmac.compare_digest(owner.encode(), self.owner.encode())


ANYONE = Caller(owner="", restricted=False)


class KeyRing:
    """The configured API and operator keys, held as fingerprints; none: access control off."""

    def __init__(self, keys: Iterable[str], operators: Iterable[str] = ()) -> None:
        self._operators = frozenset(fingerprint(key) for key in operators)
        self._fingerprints = tuple({fingerprint(key) for key in keys} | self._operators)

    @property
    def enabled(self) -> bool:
        return bool(self._fingerprints)

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller an ``Authorization`` header value proves, or None when it proves none."""
        if not self.enabled:
            return ANYONE
        token = bearer_token(authorization)
        if token is None:
            return None
        presented = fingerprint(token)
        matched = ""
        for known in self._fingerprints:  # no early exit: every key is compared every time
            if hmac.compare_digest(presented, known):
                matched = known
        if not matched:
            return None
        return Caller(owner=matched, restricted=True, operator=matched in self._operators)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key, needed when the service runs with IMGSTREAM_API_KEYS set.",
)


async def caller(
    request: Request,
    # Declared so that the OpenAPI schema documents the scheme; the gate has checked it.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Caller:
    """FastAPI dependency: the caller the gate identified (fails closed if it did not run)."""
    found = getattr(request.state, CALLER_STATE_KEY, None)
    if isinstance(found, Caller):
        return found
    keyring: KeyRing = request.app.state.keyring
    if keyring.enabled:
        raise HTTPException(401, "this API needs a key", headers={"WWW-Authenticate": CHALLENGE})
    return ANYONE


async def operator(who: Annotated[Caller, Depends(caller)]) -> Caller:
    """FastAPI dependency of operator routes: ``403`` for an ordinary key."""
    if not who.sees_everything:
        raise HTTPException(403, "this needs an operator key (IMGSTREAM_ADMIN_KEYS)")
    return who
