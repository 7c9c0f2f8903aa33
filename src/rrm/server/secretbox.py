"""Encryption at rest for secret values: AES-256-GCM, the secret's name bound in as associated data
so a ciphertext cannot be moved to another secret's row."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_ENV = "RRM_SECRET_KEY"
KEY_FILE = "secret-key"


class SecretKeyError(ValueError):
    pass


def write_private_file(path: Path, content: bytes) -> None:
    """Create a file readable by its owner only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_key(data_dir: Path, configured: str | None = None) -> bytes:
    """The configured key (`RRM_SECRET_KEY`: urlsafe base64 of 32 bytes) wins; else the data dir's key file,
    made on first use."""
    if configured:
        try:
            key = base64.urlsafe_b64decode(configured.strip() + "=" * (-len(configured.strip()) % 4))
        except ValueError as exc:
            raise SecretKeyError(f"{KEY_ENV}: not base64 ({exc})") from exc
        if len(key) != 32:
            raise SecretKeyError(f"{KEY_ENV}: must decode to 32 bytes, got {len(key)}")
        return key
    path = data_dir / KEY_FILE
    if not path.exists():
        write_private_file(path, base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)) + b"\n")
    return base64.urlsafe_b64decode(path.read_bytes().strip())


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._key = key

    def derive_key(self, purpose: str) -> bytes:
        """A key for another use (signing dashboard sessions), from which this one cannot be recovered."""
        return HKDF(algorithm=SHA256(), length=32, salt=None, info=purpose.encode()).derive(self._key)

    def seal(self, name: str, data: dict[str, str]) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, json.dumps(data, sort_keys=True).encode(), name.encode())

    def open(self, name: str, blob: bytes) -> dict[str, str]:
        plain = self._aead.decrypt(blob[:12], blob[12:], name.encode())
        result: dict[str, str] = json.loads(plain)
        return result
