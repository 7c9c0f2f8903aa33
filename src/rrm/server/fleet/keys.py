"""The agents' public keys in memory, so that checking a signed agent request reads no database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from rrm.wire.agent_auth import load_public_key


class AgentKeys:
    """Each paired runtime's one key, found by its key id."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}  # key id → (runtime id, public key)
        self._key_of: dict[str, str] = {}  # runtime id → its one key id

    def key(self, key_id: str) -> tuple[str, Ed25519PublicKey] | None:
        return self._keys.get(key_id)

    def set_key(self, runtime_id: str, key_id: str, public_pem: str) -> None:
        """Make a just-committed key usable at once, ahead of the change feed."""
        self.forget_keys(runtime_id)
        self._keys[key_id] = (runtime_id, load_public_key(public_pem))
        self._key_of[runtime_id] = key_id

    def forget_keys(self, runtime_id: str) -> None:
        kid = self._key_of.pop(runtime_id, None)
        if kid is not None:
            self._keys.pop(kid, None)

    def paired(self, runtime_id: str) -> bool:
        return runtime_id in self._key_of

    def take(self, keys: Mapping[str, Sequence[tuple[str, str]]], *, full: bool) -> None:
        """Replace the keys of these runtimes by those read from the database (runtime id → [(key id,
        PEM)]; [] unpairs); `full` replaces every runtime's."""
        if full:
            self._keys, self._key_of = {}, {}
        for runtime_id, pairs in keys.items():
            self.forget_keys(runtime_id)
            for key_id, public_pem in pairs:
                self.set_key(runtime_id, key_id, public_pem)
