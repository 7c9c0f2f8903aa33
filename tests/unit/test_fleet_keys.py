"""The agents' keys in the server's memory: one key per runtime, replaced, forgotten, taken from a read."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from fleet_fixtures import public_pem

from rrm.server.fleet.keys import AgentKeys


def raw(pem: str) -> bytes:
    loaded = serialization.load_pem_public_key(pem.encode())
    return loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_a_set_key_is_found_by_its_id_with_its_runtime() -> None:
    keys, pem = AgentKeys(), public_pem()
    keys.set_key("r1", "k1", pem)
    found = keys.key("k1")
    assert found is not None
    runtime_id, public = found
    assert runtime_id == "r1"
    assert public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw(pem)
    assert keys.paired("r1")
    assert keys.key("k2") is None


def test_a_runtime_has_one_key_so_a_new_one_retires_the_old() -> None:
    keys = AgentKeys()
    keys.set_key("r1", "old", public_pem())
    keys.set_key("r1", "new", public_pem())
    assert keys.key("old") is None
    assert keys.key("new") is not None


def test_forgetting_unpairs_only_that_runtime() -> None:
    keys = AgentKeys()
    keys.set_key("r1", "k1", public_pem())
    keys.set_key("r2", "k2", public_pem())
    keys.forget_keys("r1")
    keys.forget_keys("never-paired")
    assert keys.key("k1") is None
    assert not keys.paired("r1")
    assert keys.paired("r2")


def test_taking_a_read_replaces_the_keys_of_the_runtimes_read_and_no_others() -> None:
    keys = AgentKeys()
    keys.set_key("r1", "k1", public_pem())
    keys.set_key("r2", "k2", public_pem())
    keys.set_key("r3", "k3", public_pem())
    keys.take({"r1": [("k1b", public_pem())], "r2": []}, full=False)
    assert keys.key("k1") is None
    assert keys.key("k1b") is not None
    assert not keys.paired("r2")
    assert keys.key("k3") is not None


def test_taking_a_full_read_drops_the_keys_it_does_not_name() -> None:
    keys = AgentKeys()
    keys.set_key("gone", "k0", public_pem())
    keys.take({"r1": [("k1", public_pem())]}, full=True)
    assert keys.key("k0") is None
    assert not keys.paired("gone")
    assert keys.paired("r1")
