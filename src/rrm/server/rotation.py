"""Rotation challenges: nonces the agent signs with its current key to replace it, kept in no table.

A nonce names the runtime it was issued to and when it expires, and carries an HMAC under a key derived from
the secret key, so that any replica can check one another issued. It is single-use through the proof it
goes with: that proof is a signature of the key in force, which the rotation replaces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

KEY_PURPOSE = "rrm agent key rotation challenge"
CHALLENGE_SECONDS = 60


class ChallengeRefused(ValueError):
    """The nonce is malformed, forged, for another runtime, or expired."""


def issue_challenge(key: bytes, runtime_id: str, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + CHALLENGE_SECONDS)
    payload = _encode(json.dumps([runtime_id, expires, os.urandom(12).hex()]).encode())
    return f"{payload}.{_mac(key, payload)}"


def check_challenge(key: bytes, nonce: str, runtime_id: str, now: float | None = None) -> None:
    """Raise `ChallengeRefused` unless `nonce` was issued by a director to `runtime_id` and is still valid."""
    payload, _, mac = nonce.partition(".")
    if not hmac.compare_digest(mac.encode(), _mac(key, payload).encode()):
        raise ChallengeRefused("nonce: not issued by this control plane")
    issued_to, expires, _ = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if issued_to != runtime_id:
        raise ChallengeRefused("nonce: issued to another runtime")
    if expires <= (time.time() if now is None else now):
        raise ChallengeRefused("nonce: expired; ask for a new challenge")


def _mac(key: bytes, payload: str) -> str:
    return _encode(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
