"""Who is calling: operators with admin tokens, runtimes with JWTs signed by their own key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from datetime import UTC, datetime

from fastapi import HTTPException, Request

from rrm.server.fleet import Fleet, RuntimeEntry
from rrm.store import Database
from rrm.store import tokens as token_store
from rrm.store.tokens import Grant
from rrm.wire.agent_auth import AgentTokenError, unverified_key_id, verify_agent_token

ADMIN_TOKEN_PREFIX = "rrmat_"
PAIRING_TOKEN_PREFIX = "rrmpt_"
ROLE_ADMIN = "admin"
ROLE_VIEWER = "viewer"
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def matches_hash(secret: str, stored_hash: str) -> bool:
    """Whether `secret` is the one whose `token_hash` was stored, compared in constant time."""
    return hmac.compare_digest(token_hash(secret), stored_hash)


def bearer(request: Request) -> str:
    return bearer_token(request.headers.get("authorization", ""))


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer …` header's value; 401 for anything else."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise HTTPException(401, "missing bearer token", headers=BEARER_CHALLENGE)
    return value.strip()


class AdminAuth:
    """Admin and viewer tokens, compared by their sha256 (never stored in the clear).

    A token's grant (role and expiry) is read from the database and kept for `fresh_seconds`: a token
    revoked through another replica stops working here within that time, and a stream of unknown tokens
    costs at most one query per hash per `fresh_seconds`.
    """

    def __init__(self, db: Database, fresh_seconds: float = 5.0, cache_size: int = 10_000) -> None:
        self._db = db
        self._fresh = fresh_seconds
        self._cache_size = cache_size
        self._grants: dict[str, tuple[Grant | None, float]] = {}  # hash → (grant, when read)

    def role(self, token: str) -> str | None:
        """The token's role; None for an unknown token; a 401 that says so for an expired one."""
        return self._role_of(self.grant_of_hash(token_hash(token)))

    def fresh_role(self, token: str) -> tuple[bool, str | None]:
        """(True, `role`) when the token's grant is cached and fresh, read without the database; (False,
        None) when it must be read (`role`, off the event loop)."""
        cached = self._grants.get(token_hash(token))
        if cached is None or time.monotonic() - cached[1] >= self._fresh:
            return False, None
        return True, self._role_of(cached[0])

    @staticmethod
    def _role_of(grant: Grant | None) -> str | None:
        if grant is None:
            return None
        if grant.expired(datetime.now(UTC)):
            raise HTTPException(
                401, f"token expired at {grant.expires_at:%Y-%m-%dT%H:%M:%SZ}", headers=BEARER_CHALLENGE
            )
        return grant.role

    def grant_of_hash(self, hashed: str) -> Grant | None:
        now = time.monotonic()
        cached = self._grants.get(hashed)
        if cached is not None and now - cached[1] < self._fresh:
            return cached[0]
        with self._db.read() as session:
            grant = token_store.grant_of_token(session, hashed)
        self.remember(hashed, grant, now)
        return grant

    def remember(self, hashed: str, grant: Grant | None, now: float | None = None) -> None:
        """What this replica just wrote (a new or revoked token) counts at once."""
        if len(self._grants) >= self._cache_size:
            self._grants.clear()
        self._grants[hashed] = (grant, time.monotonic() if now is None else now)


class AgentAuth:
    """Verifies runtime JWTs against the runtime's current public key; remembers verified tokens until
    they expire so a long-polling agent costs one signature check per token, not per request.

    A token is remembered by its 16-byte BLAKE2b digest rather than its text (about 310 characters), 300
    bytes less per token, and an agent has two or three live ones. Finding another token with a remembered
    digest would take a second preimage of BLAKE2b-128."""

    def __init__(self, fleet: Fleet, cache_size: int = 50_000) -> None:
        self._fleet = fleet
        self._verified: OrderedDict[bytes, tuple[str, str, float]] = (
            OrderedDict()
        )  # token's digest → (runtime, kid, exp)
        self._cache_size = cache_size

    async def runtime(self, token: str) -> RuntimeEntry:
        digest = _digest(token)
        cached = self._verified.get(digest)
        if cached is not None:
            runtime_id, kid, expires = cached
            if expires > time.time() and self._fleet.key(kid) is not None:
                return self._entry(runtime_id)
            del self._verified[digest]
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
        self._remember(digest, (runtime_id, kid, claims.expires_at))
        return self._entry(runtime_id)

    def _remember(self, digest: bytes, verified: tuple[str, str, float]) -> None:
        """Keep the token (by its `digest`) until it expires. Tokens arrive about in the order they expire
        (agents sign them with one lifetime), so dropping the expired ones from the oldest end keeps only
        the live ones, and the cache does not grow to `cache_size` with tokens no agent sends any more."""
        self._verified[digest] = verified
        now = time.time()
        while self._verified:
            oldest = next(iter(self._verified.values()))
            if oldest[2] > now and len(self._verified) <= self._cache_size:
                break
            self._verified.popitem(last=False)

    def verified(self, token: str) -> tuple[str, float] | None:
        """The key id and expiry (epoch seconds) of a token `runtime` accepted, while it is remembered."""
        cached = self._verified.get(_digest(token))
        return None if cached is None else (cached[1], cached[2])

    def _entry(self, runtime_id: str) -> RuntimeEntry:
        entry = self._fleet.runtimes.get(runtime_id)
        if entry is None:
            raise HTTPException(401, "runtime no longer registered")
        return entry


def _digest(token: str) -> bytes:
    """What the cache knows a token by (AgentAuth)."""
    return hashlib.blake2b(token.encode(), digest_size=16).digest()
