"""The local cache of the last verified desired state."""

from __future__ import annotations

import stat
from pathlib import Path

from rrm.agent.cache import DesiredStateCache
from rrm.core.hashing import state_hash
from rrm.wire.protocol import DeliveredSecret, DesiredState, replace

COMPONENTS = [
    {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "cache"},
        "spec": {"type": "state.redis", "version": "v1", "metadata": []},
    }
]
SECRETS = [DeliveredSecret(name="redis", revision=4, data={"password": "p"})]


def valid_state() -> DesiredState:
    return DesiredState(hash=state_hash(COMPONENTS, [("redis", 4)]), components=COMPONENTS, secrets=SECRETS)


def test_round_trip_in_a_0600_file(tmp_path: Path) -> None:
    cache = DesiredStateCache(tmp_path)
    cache.save(valid_state())

    assert cache.load() == valid_state()
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600


def test_missing_cache_is_none(tmp_path: Path) -> None:
    assert DesiredStateCache(tmp_path).load() is None


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    cache = DesiredStateCache(tmp_path)
    cache.save(valid_state())
    cache.path.write_bytes(cache.path.read_bytes()[:40])

    assert cache.load() is None


def test_cache_whose_content_does_not_match_its_hash_is_ignored(tmp_path: Path) -> None:
    cache = DesiredStateCache(tmp_path)
    tampered = replace(valid_state(), secrets=[replace(SECRETS[0], revision=5)])
    cache.save(tampered)

    assert cache.load() is None
