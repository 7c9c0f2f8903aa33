"""The control plane's cache of verified agent tokens: a token is checked once, kept while it is live, and
the expired ones are let go as new tokens come, so the cache holds about one token per agent."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rrm.server import auth
from rrm.server.auth import AgentAuth
from rrm.wire.agent_auth import sign_agent_token


class KeysOnly:
    """What `AgentAuth` reads of the fleet: each runtime's key, and the runtime itself."""

    def __init__(self, runtime_ids: list[str]) -> None:
        self.private = {r: Ed25519PrivateKey.generate() for r in runtime_ids}
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {
            f"kid-{r}": (r, key.public_key()) for r, key in self.private.items()
        }
        self.runtimes: dict[str, Any] = {r: object() for r in runtime_ids}

    def key(self, kid: str) -> tuple[str, Ed25519PublicKey] | None:
        return self._keys.get(kid)

    async def catch_up(self) -> None:
        return None

    def token(self, runtime_id: str, expires_in: float) -> str:
        lifetime = 300.0
        issued = time.time() + expires_in - lifetime
        return sign_agent_token(self.private[runtime_id], runtime_id, f"kid-{runtime_id}", lifetime, issued)


def test_expired_tokens_are_let_go_as_new_ones_come(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = KeysOnly(["r1", "r2", "r3"])
    agent_auth = AgentAuth(fleet)  # type: ignore[arg-type]
    soon, later, latest = fleet.token("r1", 100), fleet.token("r2", 200), fleet.token("r3", 280)
    for token in (soon, later):
        asyncio.run(agent_auth.runtime(token))
    assert agent_auth.verified(soon) is not None and agent_auth.verified(later) is not None

    now = time.time()
    monkeypatch.setattr(auth.time, "time", lambda: now + 150)  # r1's token has expired, r2's has not
    asyncio.run(agent_auth.runtime(latest))
    assert agent_auth.verified(soon) is None, "an expired token is still kept"
    assert agent_auth.verified(later) is not None and agent_auth.verified(latest) is not None


def test_the_cache_keeps_no_more_than_its_size() -> None:
    fleet = KeysOnly(["r1", "r2", "r3"])
    agent_auth = AgentAuth(fleet, cache_size=2)  # type: ignore[arg-type]
    tokens = [fleet.token(r, 200) for r in ("r1", "r2", "r3")]
    for token in tokens:
        asyncio.run(agent_auth.runtime(token))
    assert [agent_auth.verified(t) is not None for t in tokens] == [False, True, True]


def test_the_cache_keeps_a_digest_of_each_token_not_its_text() -> None:
    """Two or three live tokens per agent, each about 310 characters: the text would be most of the cache."""
    fleet = KeysOnly(["r1", "r2"])
    agent_auth = AgentAuth(fleet)  # type: ignore[arg-type]
    tokens = [fleet.token(r, 200) for r in ("r1", "r2")]
    for token in tokens:
        asyncio.run(agent_auth.runtime(token))
    assert [len(key) for key in agent_auth._verified] == [16, 16]
    assert all(agent_auth.verified(t) is not None for t in tokens)
    assert agent_auth.verified(fleet.token("r1", 100)) is None  # never shown to the cache
