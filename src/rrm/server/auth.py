"""Who is calling: operators with admin tokens, runtimes with JWTs signed by their own key."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import HTTPException, Request

from rrm.server.fleet import Fleet, RuntimeEntry
from rrm.wire.agent_auth import AgentTokenError, unverified_key_id, verify_agent_token

ADMIN_TOKEN_PREFIX = "rrmat_"
PAIRING_TOKEN_PREFIX = "rrmpt_"
ROLE_ADMIN = "admin"
ROLE_VIEWER = "viewer"


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return value.strip()


@dataclass
class AdminAuth:
    """Admin token hashes → role. Tokens are compared by their sha256, never stored in the clear.

    A hash not seen yet is looked up in the database (a token created through another replica), at most
    once per `miss_seconds` per hash, so a stream of bad tokens cannot hammer the database.
    """

    roles: dict[str, str]
    lookup: Callable[[str], str | None] | None = None
    miss_seconds: float = 5.0
    _misses: dict[str, float] = field(default_factory=dict)

    def role(self, token: str) -> str | None:
        return self.role_of_hash(token_hash(token))

    def role_of_hash(self, hashed: str) -> str | None:
        role = self.roles.get(hashed)
        if role is not None or self.lookup is None:
            return role
        now = time.monotonic()
        if now - self._misses.get(hashed, -self.miss_seconds) < self.miss_seconds:
            return None
        role = self.lookup(hashed)
        if role is None:
            if len(self._misses) > 10_000:
                self._misses.clear()
            self._misses[hashed] = now
        else:
            self.roles[hashed] = role
        return role

    def add(self, hashed: str, role: str) -> None:
        self.roles[hashed] = role


class AgentAuth:
    """Verifies runtime JWTs against the runtime's current public key; remembers verified tokens until
    they expire so a long-polling agent costs one signature check per token, not per request."""

    def __init__(self, fleet: Fleet, cache_size: int = 50_000) -> None:
        self._fleet = fleet
        self._verified: OrderedDict[str, tuple[str, str, float]] = (
            OrderedDict()
        )  # token → (runtime, kid, exp)
        self._cache_size = cache_size

    async def runtime(self, token: str) -> RuntimeEntry:
        cached = self._verified.get(token)
        if cached is not None:
            runtime_id, kid, expires = cached
            if expires > time.time() and self._fleet.key(kid) is not None:
                return self._entry(runtime_id)
            del self._verified[token]
        try:
            kid = unverified_key_id(token)
        except AgentTokenError as exc:
            raise HTTPException(401, f"invalid runtime token: {exc}") from exc
        if self._fleet.key(kid) is None:
            await self._fleet.catch_up()  # paired or rotated through another replica a moment ago
        known = self._fleet.key(kid)
        if known is None:
            raise HTTPException(401, "unknown or revoked runtime key")
        runtime_id, public_key = known
        try:
            claims = verify_agent_token(token, public_key, kid)
        except AgentTokenError as exc:
            raise HTTPException(401, f"invalid runtime token: {exc}") from exc
        if claims.runtime_id != runtime_id:
            raise HTTPException(401, "token subject does not own this key")
        self._verified[token] = (runtime_id, kid, claims.expires_at)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return self._entry(runtime_id)

    def _entry(self, runtime_id: str) -> RuntimeEntry:
        entry = self._fleet.runtimes.get(runtime_id)
        if entry is None:
            raise HTTPException(401, "runtime no longer registered")
        return entry
