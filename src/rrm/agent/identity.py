"""The runtime's identity: paired once with a single-use token, then an Ed25519 key only this agent holds.

STATE_DIR/identity.json names the runtime; STATE_DIR/agent-key.pem (0600) signs every request.
STATE_DIR/agent-key.pending.pem (0600) is the next key while a rotation is under way: written before the
director hears of it, and the key in force only once the director is known to hold it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import rrm
from rrm.agent.atomic import make_private_dir, remove_durably, write_atomic
from rrm.agent.client import DirectorClient, Unauthorized
from rrm.wire.agent_auth import (
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_pem,
    sign_agent_token,
    sign_rotation,
)
from rrm.wire.protocol import PairRequest, RotateRequest

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
KEY_FILE = "agent-key.pem"
PENDING_KEY_FILE = "agent-key.pending.pem"
TOKEN_LIFETIME_SECONDS = 300.0
# Renewed at half its lifetime: a request held up in a director's queue (a reconnect storm delayed some by
# more than 90 s) still carries a token with minutes to live, not one that expires while it waits.
TOKEN_RENEW_AFTER_SECONDS = TOKEN_LIFETIME_SECONDS / 2


@dataclass(frozen=True)
class IdentityRecord:
    runtime_id: str
    runtime_name: str
    kind: str
    key_id: str
    director_urls: list[str]


class AgentIdentity:
    """Holds the current key, signs request tokens, and rotates the key with the director."""

    def __init__(self, state_dir: Path, record: IdentityRecord, key: Ed25519PrivateKey) -> None:
        self._state_dir = state_dir
        self.record = record
        self._key = key
        self._token: str | None = None
        self._token_issued_at = self._token_renew_at = 0.0

    @classmethod
    def load(cls, state_dir: Path) -> AgentIdentity | None:
        """The stored identity, or None when this agent has not paired yet."""
        identity_path, key_path = state_dir / IDENTITY_FILE, state_dir / KEY_FILE
        if not identity_path.exists():
            return None
        record = IdentityRecord(**json.loads(identity_path.read_text()))
        key = load_private_key(key_path.read_bytes())
        identity = cls(state_dir, record, key)
        kid = key_id(public_key_pem(key))
        if kid != record.key_id:
            # A crash between writing the rotated key and identity.json: the key on disk is the one in force.
            log.warning("event=key-id-repaired stored=%s key=%s", record.key_id, kid)
            identity.record = replace(record, key_id=kid)
            identity._store_record()
        pending_path = state_dir / PENDING_KEY_FILE
        if pending_path.exists() and pending_path.read_bytes() == key_path.read_bytes():
            remove_durably(pending_path)  # a crash after the pending key became the key in force
        return identity

    @classmethod
    async def pair(
        cls, state_dir: Path, client: DirectorClient, token: str, director_urls: list[str]
    ) -> AgentIdentity:
        """Trade the pairing token for a runtime identity bound to a fresh key; store both."""
        key = generate_private_key()
        answer = await client.pair(
            PairRequest(token=token, public_key=public_key_pem(key), agent_version=rrm.__version__)
        )
        record = IdentityRecord(
            runtime_id=answer.runtime_id,
            runtime_name=answer.runtime_name,
            kind=answer.kind,
            key_id=answer.key_id,
            director_urls=list(director_urls),
        )
        identity = cls(state_dir, record, key)
        make_private_dir(state_dir)
        identity._store_key(key)
        identity._store_record()
        remove_durably(state_dir / PENDING_KEY_FILE)  # one of a former identity: no director ever held it
        log.info("event=paired runtime=%s id=%s kind=%s", record.runtime_name, record.runtime_id, record.kind)
        return identity

    def bearer_token(self, *, renew: bool = False, now: float | None = None) -> str:
        """A signed JWT, reused for half its lifetime; `renew` mints a fresh one at once (the director
        answered that the last one had expired, or was not valid yet). `now` is the directors' present as
        the client estimates it (this host's clock when not given): the token's times are theirs."""
        now = time.time() if now is None else now
        if renew or self._token is None or not self._token_issued_at <= now < self._token_renew_at:
            self._token = sign_agent_token(
                self._key,
                self.record.runtime_id,
                self.record.key_id,
                lifetime=TOKEN_LIFETIME_SECONDS,
                now=now,
            )
            self._token_issued_at = now
            self._token_renew_at = now + TOKEN_RENEW_AFTER_SECONDS
        return self._token

    def key_age(self) -> float:
        """Seconds since the key was written, so a restart does not postpone rotation; infinite while a
        rotation is unfinished (a pending key), so that it is finished at once."""
        if (self._state_dir / PENDING_KEY_FILE).exists():
            return math.inf
        return max(0.0, time.time() - (self._state_dir / KEY_FILE).stat().st_mtime)

    async def rotate(self, client: DirectorClient) -> None:
        """Register the pending key, proving with the current one that this agent holds it (a signature over
        the director's nonce and the new key), and make it the key in force once the director holds it.

        The pending key is on disk before the director hears of it. When the director refuses the current
        key, its answer to an earlier rotation was lost (a network cut, a crash) after it took the pending
        one: a token signed by the pending key tells, and the rotation is complete."""
        pending = self._pending_key()
        new_public = public_key_pem(pending)
        try:
            challenge = await client.rotation_challenge()
            proof = sign_rotation(self._key, self.record.runtime_id, challenge.nonce, new_public)
            answer = await client.rotate(
                RotateRequest(public_key=new_public, nonce=challenge.nonce, proof=proof)
            )
            new_kid = answer.key_id
        except Unauthorized:
            new_kid = key_id(new_public)
            token = sign_agent_token(
                pending,
                self.record.runtime_id,
                new_kid,
                lifetime=TOKEN_LIFETIME_SECONDS,
                now=client.clock.now(),
            )
            if not await client.accepts(token):
                raise
            log.warning(
                "event=key-rotation-completed runtime=%s key_id=%s reason=answer-lost",
                self.record.runtime_name,
                new_kid,
            )
        self._promote(pending, new_kid)

    def _pending_key(self) -> Ed25519PrivateKey:
        """The key an unfinished rotation proposed (the director may hold it already), else a new one, stored
        (0600) before any director hears of it."""
        path = self._state_dir / PENDING_KEY_FILE
        if path.exists():
            return load_private_key(path.read_bytes())
        key = generate_private_key()
        write_atomic(path, private_key_pem(key), mode=0o600)
        return key

    def _promote(self, key: Ed25519PrivateKey, kid: str) -> None:
        """Make the pending key, which the director holds, the key in force; the pending file goes last."""
        self._store_key(key)
        self.record = replace(self.record, key_id=kid)
        self._store_record()
        remove_durably(self._state_dir / PENDING_KEY_FILE)
        self._key = key
        self._token = None
        log.info("event=key-rotated runtime=%s key_id=%s", self.record.runtime_name, kid)

    def _store_key(self, key: Ed25519PrivateKey) -> None:
        write_atomic(self._state_dir / KEY_FILE, private_key_pem(key), mode=0o600)

    def _store_record(self) -> None:
        data = json.dumps(asdict(self.record), indent=2).encode()
        write_atomic(self._state_dir / IDENTITY_FILE, data, mode=0o600)
