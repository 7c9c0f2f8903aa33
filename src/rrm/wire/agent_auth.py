"""Runtime identity on the wire: the agent signs short-lived EdDSA JWTs with a key only it holds.

The control plane stores the public half only, so nothing in its database lets anyone act as a runtime.
Replacing that key takes more than a bearer token (which a thief could hold for minutes): the agent signs a
nonce the control plane issued, together with the new public key, with the key in force (`sign_rotation`).
Signing needs only `cryptography`; PyJWT, which verifies, is imported by the control plane alone, so that an
agent process does not carry it (and the parts of `cryptography` it loads).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

AUDIENCE = "rrm-agent-api"
ALGORITHM = "EdDSA"
MAX_LIFETIME_SECONDS = 600
# What an expired token's refusal says (the director answers 401 "invalid runtime token: <this>"): the agent
# tells it apart from a revoked or unknown runtime, renews its token and sends the request again.
EXPIRED_TOKEN_MESSAGE = "Signature has expired"
# What a token issued after the director's present says: the agent's clock is ahead of the director's.
NOT_YET_VALID_MESSAGE = "token issued in the future"
# The refusals that a token minted by a wrong clock gets: the agent signs again in the director's time.
CLOCK_REFUSALS = (EXPIRED_TOKEN_MESSAGE, NOT_YET_VALID_MESSAGE)
# Key rotation, version 2 of the protocol: what a rotation proof signs starts with this (version 1 took a
# bearer token alone).
ROTATION_PROOF_CONTEXT = "rrm-agent-rotate-v2"


class AgentTokenError(Exception):
    """The token is malformed, expired, not signed by the runtime's key, or lives too long."""


@dataclass(frozen=True)
class AgentClaims:
    runtime_id: str
    key_id: str
    expires_at: float


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the agent key must be an Ed25519 private key")
    return key


def public_key_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def load_public_key(pem: str) -> Ed25519PublicKey:
    """Parse an agent's public key; raises ValueError for anything but an Ed25519 PEM."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except Exception as exc:
        raise ValueError(f"public_key: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("public_key: must be an Ed25519 key")
    return key


def key_id(public_pem: str) -> str:
    """A stable short name for a public key: sha256 of its DER form."""
    der = load_public_key(public_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:24]


def sign_agent_token(
    key: Ed25519PrivateKey, runtime_id: str, kid: str, lifetime: float = 300, now: float | None = None
) -> str:
    """A compact JWS (RFC 7515, EdDSA per RFC 8037): byte for byte what PyJWT's `jwt.encode` makes of the
    same claims and header (sorted header keys, compact JSON; Ed25519 signatures are deterministic)."""
    issued = time.time() if now is None else now
    header = {"alg": ALGORITHM, "kid": kid, "typ": "JWT"}
    claims = {"sub": runtime_id, "aud": AUDIENCE, "iat": int(issued), "exp": int(issued + lifetime)}
    signing_input = f"{_base64url_json(header)}.{_base64url_json(claims)}"
    return f"{signing_input}.{_base64url(key.sign(signing_input.encode('ascii')))}"


def _base64url_json(value: Mapping[str, object]) -> str:
    return _base64url(json.dumps(value, separators=(",", ":")).encode())


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unverified_key_id(token: str) -> str:
    """The `kid` header, to look the public key up before verifying."""
    import jwt

    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as exc:
        raise AgentTokenError(f"malformed token: {exc}") from exc
    if not isinstance(kid, str) or not kid:
        raise AgentTokenError("token has no kid header")
    return kid


def verify_agent_token(token: str, public_key: Ed25519PublicKey, kid: str) -> AgentClaims:
    import jwt

    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["sub", "exp", "iat", "aud"]},
            leeway=30,
        )
    except jwt.ExpiredSignatureError as exc:
        raise AgentTokenError(EXPIRED_TOKEN_MESSAGE) from exc
    except jwt.ImmatureSignatureError as exc:
        raise AgentTokenError(NOT_YET_VALID_MESSAGE) from exc
    except jwt.PyJWTError as exc:
        raise AgentTokenError(str(exc)) from exc
    if claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS:
        raise AgentTokenError(f"token lifetime exceeds {MAX_LIFETIME_SECONDS} s")
    return AgentClaims(runtime_id=str(claims["sub"]), key_id=kid, expires_at=float(claims["exp"]))


def rotation_message(runtime_id: str, nonce: str, new_public_pem: str) -> bytes:
    """What a rotation proof signs: the runtime, the director's nonce and the key that is to replace the
    signer's, so that a proof cannot be replayed for another runtime, another challenge or another key."""
    return "\n".join((ROTATION_PROOF_CONTEXT, runtime_id, nonce, new_public_pem)).encode()


def sign_rotation(key: Ed25519PrivateKey, runtime_id: str, nonce: str, new_public_pem: str) -> str:
    return _base64url(key.sign(rotation_message(runtime_id, nonce, new_public_pem)))


def rotation_proof_is_valid(
    public_key: Ed25519PublicKey, proof: str, runtime_id: str, nonce: str, new_public_pem: str
) -> bool:
    """Whether `proof` is the signature of the key in force over this rotation."""
    try:
        signature = base64.urlsafe_b64decode(proof + "=" * (-len(proof) % 4))
        public_key.verify(signature, rotation_message(runtime_id, nonce, new_public_pem))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
