"""Runtime keys: one runtime per public key, rotation only by whoever holds the key in force, a rotation that
survives a network cut or a kill -9 at each step, and agents whose clock is off (faked for the real agent
process with libfaketime, as a host's wrong clock would be)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rrm.agent.identity import IDENTITY_FILE, KEY_FILE, PENDING_KEY_FILE
from rrm.wire import agent_auth

from .harness import (
    AgentIdentity,
    AgentProcess,
    Fleet,
    ServerProcess,
    apply,
    condition_true,
    expect_status,
    http_binding,
    metadata_value,
    pair,
    pair_request,
    register,
    runtime,
    synced,
)
from .network_cut import AnswerDroppingProxy

pytestmark = pytest.mark.integration

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def rotation_body(
    identity: AgentIdentity, new_public: str, *, signer: Ed25519PrivateKey | None = None
) -> dict[str, str]:
    """A rotation request as the agent makes it: a fresh challenge, signed by `signer` (the key in force
    unless given)."""
    challenge = expect_status(identity.request("POST", "/agent/v1/rotate/challenge"), 200).json()
    key = signer or identity.key
    proof = agent_auth.sign_rotation(key, identity.runtime_id, challenge["nonce"], new_public)
    return {"public_key": new_public, "nonce": challenge["nonce"], "proof": proof}


def test_pairing_with_another_runtimes_key_is_409_and_changes_nothing(
    server: ServerProcess, admin: httpx.Client
) -> None:
    a = pair(server.url, register(admin, "key-owner-a", labels={"t-key": "a"}))
    token_b = register(admin, "key-thief-b", labels={"t-key": "b"})

    refused = pair_request(server.url, token_b, a.key)

    assert refused.status_code == 409, refused.text
    assert "already another runtime's" in refused.json()["detail"]
    assert runtime(admin, "key-thief-b")["paired"] is False
    expect_status(a.desired_state(), 200)
    # the refusal did not use the pairing token up: b pairs with it and a key of its own
    b = pair(server.url, token_b)
    assert b.runtime_name == "key-thief-b"
    expect_status(b.desired_state(), 200)


def test_rotating_to_another_runtimes_key_is_409_and_changes_nothing(
    server: ServerProcess, admin: httpx.Client
) -> None:
    a = pair(server.url, register(admin, "key-rot-a", labels={"t-key": "rot-a"}))
    b = pair(server.url, register(admin, "key-rot-b", labels={"t-key": "rot-b"}))

    refused = b.request("POST", "/agent/v1/rotate", json=rotation_body(b, agent_auth.public_key_pem(a.key)))

    assert refused.status_code == 409, refused.text
    assert "already another runtime's" in refused.json()["detail"]
    expect_status(a.desired_state(), 200)
    expect_status(b.desired_state(), 200)


def test_a_bearer_token_alone_cannot_rotate_the_key(server: ServerProcess, admin: httpx.Client) -> None:
    victim = pair(server.url, register(admin, "key-stolen", labels={"t-key": "stolen"}))
    thief_key = agent_auth.generate_private_key()
    thief_public = agent_auth.public_key_pem(thief_key)

    no_proof = victim.request("POST", "/agent/v1/rotate", json={"public_key": thief_public})
    assert no_proof.status_code == 422, no_proof.text
    signed_by_thief = victim.request(
        "POST", "/agent/v1/rotate", json=rotation_body(victim, thief_public, signer=thief_key)
    )
    assert signed_by_thief.status_code == 403, signed_by_thief.text
    forged_nonce = {
        "public_key": thief_public,
        "nonce": "forged.nonce",
        "proof": agent_auth.sign_rotation(victim.key, victim.runtime_id, "forged.nonce", thief_public),
    }
    forged = victim.request("POST", "/agent/v1/rotate", json=forged_nonce)
    assert forged.status_code == 403, forged.text
    thief = AgentIdentity(
        server.url, victim.runtime_id, victim.runtime_name, thief_key, agent_auth.key_id(thief_public)
    )
    assert thief.desired_state().status_code == 401, "a refused rotation installed the thief's key"
    expect_status(victim.desired_state(), 200)

    # the holder of the key rotates; its proof cannot be replayed afterwards
    new_key = agent_auth.generate_private_key()
    body = rotation_body(victim, agent_auth.public_key_pem(new_key))
    new_kid = expect_status(victim.request("POST", "/agent/v1/rotate", json=body), 200).json()["key_id"]
    rotated = AgentIdentity(server.url, victim.runtime_id, victim.runtime_name, new_key, new_kid)
    expect_status(rotated.desired_state(), 200)
    assert victim.desired_state().status_code == 401, "the old key still works after rotation"
    assert rotated.request("POST", "/agent/v1/rotate", json=body).status_code == 403, "a proof replayed"


def test_the_real_agent_rotates_its_key_and_keeps_working(fleet: Fleet, admin: httpx.Client) -> None:
    agent = fleet.agent("key-rotating-agent", {"t-key": "agent"})
    fleet.wait_runtime("key-rotating-agent", lambda d: condition_true(d, "Connected"), "Connected")
    agent.stop()
    key_path = agent.state_dir / KEY_FILE
    old_key = key_path.read_bytes()
    a_day_ago = time.time() - 86_400 - 60
    os.utime(key_path, (a_day_ago, a_day_ago))  # a key a day old: the agent rotates it as it starts

    agent.start()
    fleet.wait_until(lambda: key_path.read_bytes() != old_key, "the agent rotated its key")
    apply(admin, [http_binding("key-rotated-web", "t-key=agent", "http://after-rotation.invalid/")])
    fleet.wait_files(
        agent,
        lambda c: metadata_value(c.get("key-rotated-web", {}), "url") == "http://after-rotation.invalid/",
        "delivery with the rotated key",
    )
    fleet.wait_runtime("key-rotating-agent", synced, "Synced with the rotated key")
    assert "event=key-rotated" in agent.log_path.read_text()


def identity_on_disk(agent: AgentProcess, server_url: str, key_pem: bytes | None = None) -> AgentIdentity:
    """The agent's runtime with its key on disk (or `key_pem`), to call the agent API as the agent would."""
    record = json.loads((agent.state_dir / IDENTITY_FILE).read_text())
    key = agent_auth.load_private_key(key_pem or (agent.state_dir / KEY_FILE).read_bytes())
    kid = agent_auth.key_id(agent_auth.public_key_pem(key))
    return AgentIdentity(server_url, record["runtime_id"], record["runtime_name"], key, kid)


def assert_rotated_to(
    fleet: Fleet, admin: httpx.Client, agent: AgentProcess, new_key: bytes, old_key: bytes
) -> None:
    """The agent completed its rotation to `new_key` without re-pairing: one key on disk, the director holds
    it and not the old one, and the agent gets deliveries."""
    key_path, pending_path = agent.state_dir / KEY_FILE, agent.state_dir / PENDING_KEY_FILE
    fleet.wait_until(
        lambda: key_path.read_bytes() == new_key and not pending_path.exists(),
        lambda: fleet.explain(
            f"the agent did not complete the rotation: pending key left={pending_path.exists()}"
        ),
    )
    expect_status(identity_on_disk(agent, fleet.server.url).desired_state(), 200)
    old = identity_on_disk(agent, fleet.server.url, old_key)
    assert old.desired_state().status_code == 401, "the director still takes the old key"
    label = agent.name
    apply(admin, [http_binding(f"{label}-web", f"t-cut={label}", f"http://{label}.invalid/")])
    fleet.wait_files(
        agent,
        lambda c: metadata_value(c.get(f"{label}-web", {}), "url") == f"http://{label}.invalid/",
        "delivery with the rotated key",
    )


def test_a_rotation_whose_answer_a_network_cut_dropped_completes_without_re_pairing(
    fleet: Fleet, admin: httpx.Client
) -> None:
    name = "key-cut-answer"
    token = register(admin, name, labels={"t-cut": name})
    proxy = AnswerDroppingProxy(fleet.server.url)
    try:
        agent = fleet.agent_process(name)
        agent.director_url = proxy.url
        agent.start(token)
        fleet.wait_runtime(name, lambda d: condition_true(d, "Connected"), "Connected through the proxy")
        agent.stop()
        key_path = agent.state_dir / KEY_FILE
        old_key = key_path.read_bytes()
        a_day_ago = time.time() - 86_400 - 60
        os.utime(key_path, (a_day_ago, a_day_ago))  # a key a day old: the agent rotates it as it starts
        proxy.arm(b"POST /agent/v1/rotate ")

        agent.start()
        fleet.wait_until(proxy.dropped.is_set, "the rotation's answer reached the proxy and was dropped")
        fleet.wait_until(lambda: key_path.read_bytes() != old_key, "the agent completed the rotation")
        assert_rotated_to(fleet, admin, agent, key_path.read_bytes(), old_key)
        assert "event=key-rotation-completed" in agent.log_path.read_text()
    finally:
        proxy.close()


@pytest.mark.parametrize("crash", ["before-the-request", "after-the-commit", "after-replacing-the-key-file"])
def test_an_agent_killed_during_a_rotation_completes_it_when_restarted(
    fleet: Fleet, admin: httpx.Client, crash: str
) -> None:
    """kill -9 at each step of a rotation, with the files as the agent leaves them there: the pending key
    written (and maybe the director's commit of it done, with the agent's own key, as the agent does it;
    maybe the key file replaced, identity.json not yet)."""
    name = f"key-killed-{crash}"
    agent = fleet.agent(name, {"t-cut": name})
    fleet.wait_runtime(name, lambda d: condition_true(d, "Connected"), "Connected")
    agent.kill9()
    key_path = agent.state_dir / KEY_FILE
    old_key = key_path.read_bytes()
    pending = agent_auth.generate_private_key()
    pending_pem = agent_auth.private_key_pem(pending)
    (agent.state_dir / PENDING_KEY_FILE).write_bytes(pending_pem)
    os.chmod(agent.state_dir / PENDING_KEY_FILE, 0o600)
    if crash != "before-the-request":
        current = identity_on_disk(agent, fleet.server.url)
        body = rotation_body(current, agent_auth.public_key_pem(pending))
        expect_status(current.request("POST", "/agent/v1/rotate", json=body), 200)
    if crash == "after-replacing-the-key-file":
        key_path.write_bytes(pending_pem)

    agent.start()

    assert_rotated_to(fleet, admin, agent, pending_pem, old_key)
    record = json.loads((agent.state_dir / IDENTITY_FILE).read_text())
    assert record["key_id"] == agent_auth.key_id(agent_auth.public_key_pem(pending))


def require_libfaketime() -> None:
    """Installed by CI (.ci/run), where its absence fails the test; elsewhere the test is skipped."""
    if LIBFAKETIME.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{LIBFAKETIME} is missing: install the Debian package faketime")
    pytest.skip("libfaketime is not installed (Debian package faketime)")


class SkewedAgent(AgentProcess):
    """The real agent on a host whose clock is `skew` seconds off (libfaketime shifts every clock the process
    reads; nothing in rrm knows)."""

    skew = 0

    def _launch(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        faked = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"{self.skew:+d}", "FAKETIME_DONT_RESET": "1"}
        super()._launch(args, {**(env or {}), **faked})


@pytest.mark.parametrize("skew", [60, -400], ids=["60s-ahead", "400s-behind"])
def test_an_agent_whose_clock_is_off_pairs_and_keeps_working(
    fleet: Fleet, admin: httpx.Client, skew: int
) -> None:
    require_libfaketime()
    name = f"clock-skew-{'ahead' if skew > 0 else 'behind'}"
    token = register(admin, name, labels={"t-clock": name})
    base = fleet.workdir / name
    agent = SkewedAgent(name, fleet.server.url, base / "state", base / "resources", base / "agent.log")
    agent.skew = skew
    fleet.processes.append(agent)
    agent.start(token)
    fleet.wait_runtime(name, lambda d: condition_true(d, "Connected"), "Connected despite the clock")
    apply(admin, [http_binding(f"{name}-web", f"t-clock={name}", "http://skewed.invalid/")])
    fleet.wait_files(agent, lambda c: f"{name}-web" in c, "delivery to an agent whose clock is off")
    fleet.wait_runtime(name, synced, "Synced despite the clock")
    detail = runtime(admin, name)
    assert "clock" in detail["message"], f"the status message does not name the clock: {detail['message']!r}"

    # restarted, it signs its first request with its own clock, is refused for it, and corrects at once
    agent.stop()
    agent.start()
    apply(admin, [http_binding(f"{name}-web", f"t-clock={name}", "http://skewed-again.invalid/")])
    fleet.wait_files(
        agent,
        lambda c: metadata_value(c.get(f"{name}-web", {}), "url") == "http://skewed-again.invalid/",
        "delivery after a restart with the clock still off",
    )
    log = agent.log_path.read_text()
    assert "event=clock-offset" in log, "the agent's log does not say its clock is off"
