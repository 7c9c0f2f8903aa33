"""Runtime identity: pairing stores a key only this agent has; rotation replaces it only on success, and an
answer lost after the director took the new key (a network cut, a crash) does not lock the agent out."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import httpx
import pytest

from rrm.agent.client import DirectorClient, DirectorUnavailable, Unauthorized
from rrm.agent.identity import KEY_FILE, PENDING_KEY_FILE, AgentIdentity
from rrm.wire.agent_auth import (
    ALGORITHM,
    AUDIENCE,
    EXPIRED_TOKEN_MESSAGE,
    AgentTokenError,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
    rotation_proof_is_valid,
    sign_agent_token,
    sign_rotation,
    unverified_key_id,
    verify_agent_token,
)
from rrm.wire.protocol import StatusReport


class FakeDirector:
    """Just enough of the agent API to pair and rotate, verifying the bearer and the rotation proof like the
    server does."""

    def __init__(self) -> None:
        self.public_key: str | None = None
        self.rotate_status = 200
        self.lost_answer: httpx.TransportError | None = None  # how the next rotation's answer is lost
        self.nonces: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/agent/v1/pair":
            body = json.loads(request.content)
            self.public_key = body["public_key"]
            kid = key_id(body["public_key"])
            return httpx.Response(
                201,
                json={"runtime_id": "rt-1", "runtime_name": "edge-1", "kind": "selfhosted", "key_id": kid},
            )
        assert self.public_key is not None
        token = request.headers["Authorization"].removeprefix("Bearer ")
        try:
            verify_agent_token(token, load_public_key(self.public_key), key_id(self.public_key))
        except AgentTokenError as exc:
            return httpx.Response(401, json={"detail": f"unknown or revoked runtime key: {exc}"})
        if request.url.path == "/agent/v1/rotate/challenge":
            self.nonces.append(f"nonce-{len(self.nonces)}")
            return httpx.Response(200, json={"nonce": self.nonces[-1], "expires_in": 60})
        if self.rotate_status != 200:
            return httpx.Response(self.rotate_status, json={"detail": "down"})
        body = json.loads(request.content)
        assert body["nonce"] == self.nonces[-1]
        assert rotation_proof_is_valid(
            load_public_key(self.public_key), body["proof"], "rt-1", body["nonce"], body["public_key"]
        ), "the rotation proof is not the current key's signature"
        self.public_key = body["public_key"]
        if self.lost_answer is not None:
            lost, self.lost_answer = self.lost_answer, None
            raise lost
        return httpx.Response(200, json={"key_id": key_id(body["public_key"])})


def test_pairing_stores_identity_and_a_0600_key(tmp_path: Path) -> None:
    director = FakeDirector()

    async def scenario() -> AgentIdentity:
        client = DirectorClient(["http://d"], transport=httpx.MockTransport(director.handle))
        try:
            return await AgentIdentity.pair(tmp_path, client, "pairing-token", ["http://d"])
        finally:
            await client.close()

    identity = asyncio.run(scenario())

    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    stored = json.loads((tmp_path / "identity.json").read_text())
    assert stored == {
        "runtime_id": "rt-1",
        "runtime_name": "edge-1",
        "kind": "selfhosted",
        "key_id": identity.record.key_id,
        "director_urls": ["http://d"],
    }
    assert "pairing-token" not in (tmp_path / "identity.json").read_text()
    loaded = AgentIdentity.load(tmp_path)
    assert loaded is not None and loaded.record == identity.record
    assert director.public_key is not None
    claims = verify_agent_token(
        loaded.bearer_token(), load_public_key(director.public_key), identity.record.key_id
    )
    assert claims.runtime_id == "rt-1"


def test_tokens_are_byte_for_byte_what_pyjwt_makes_and_it_verifies_them() -> None:
    import jwt

    key = generate_private_key()
    kid = key_id(public_key_pem(key))
    claims = {"sub": "rt-1", "aud": AUDIENCE, "iat": 1_700_000_000, "exp": 1_700_000_300}

    made = sign_agent_token(key, "rt-1", kid, lifetime=300, now=1_700_000_000.7)

    assert made == jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})
    fresh = sign_agent_token(key, "rt-1", kid)
    assert unverified_key_id(fresh) == kid
    assert verify_agent_token(fresh, load_public_key(public_key_pem(key)), kid).runtime_id == "rt-1"


def test_no_identity_stored_is_none(tmp_path: Path) -> None:
    assert AgentIdentity.load(tmp_path) is None


def test_bearer_token_is_reused_for_half_its_lifetime_then_renewed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rrm.agent.identity as identity_module

    identity = paired(tmp_path, FakeDirector())
    clock = [1_000_000.0]
    monkeypatch.setattr(identity_module.time, "time", lambda: clock[0])
    first = identity.bearer_token()
    clock[0] += identity_module.TOKEN_LIFETIME_SECONDS / 2 - 1
    assert identity.bearer_token() == first
    clock[0] += 1
    second = identity.bearer_token()
    assert second != first
    clock[0] += 1
    assert identity.bearer_token() == second
    renewed = identity.bearer_token(renew=True)
    assert renewed != second
    assert identity.bearer_token() == renewed


def test_a_token_the_director_finds_expired_is_renewed_and_the_request_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end with the real identity and the real verification: the agent's token expired while its
    request waited (modelled by the agent's clock catching up with the director's when it is refused)."""
    import rrm.agent.identity as identity_module

    director = FakeDirector()
    identity = paired(tmp_path, director)
    real_time = time.time
    clock = [real_time() - 1000]
    monkeypatch.setattr(identity_module.time, "time", lambda: clock[0])
    refusals: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        assert director.public_key is not None
        token = request.headers["Authorization"].removeprefix("Bearer ")
        try:
            verify_agent_token(token, load_public_key(director.public_key), identity.record.key_id)
        except AgentTokenError as exc:
            refusals.append(str(exc))
            clock[0] = real_time()
            return httpx.Response(401, json={"detail": f"invalid runtime token: {exc}"})
        return httpx.Response(204)

    async def scenario() -> None:
        client = DirectorClient(
            ["http://d"], bearer=identity.bearer_token, transport=httpx.MockTransport(handle)
        )
        try:
            await client.report_status(StatusReport())
        finally:
            await client.close()

    asyncio.run(scenario())
    assert refusals == [EXPIRED_TOKEN_MESSAGE]


def paired(state_dir: Path, director: FakeDirector) -> AgentIdentity:
    async def scenario() -> AgentIdentity:
        client = DirectorClient(["http://d"], transport=httpx.MockTransport(director.handle))
        try:
            return await AgentIdentity.pair(state_dir, client, "t", ["http://d"])
        finally:
            await client.close()

    return asyncio.run(scenario())


def rotate(identity: AgentIdentity, director: FakeDirector) -> None:
    async def scenario() -> None:
        client = DirectorClient(
            ["http://d"], bearer=identity.bearer_token, transport=httpx.MockTransport(director.handle)
        )
        try:
            await identity.rotate(client)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_rotation_replaces_the_key_after_the_director_accepted_it(tmp_path: Path) -> None:
    director = FakeDirector()
    identity = paired(tmp_path, director)
    old_pem = (tmp_path / KEY_FILE).read_bytes()

    rotate(identity, director)

    assert (tmp_path / KEY_FILE).read_bytes() != old_pem
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    reloaded = AgentIdentity.load(tmp_path)
    assert reloaded is not None
    assert director.public_key is not None
    assert reloaded.record.key_id == key_id(director.public_key)
    verify_agent_token(reloaded.bearer_token(), load_public_key(director.public_key), reloaded.record.key_id)
    verify_agent_token(identity.bearer_token(), load_public_key(director.public_key), reloaded.record.key_id)


def test_failed_rotation_keeps_the_old_key(tmp_path: Path) -> None:
    director = FakeDirector()
    identity = paired(tmp_path, director)
    old_pem = (tmp_path / KEY_FILE).read_bytes()
    old_record = identity.record
    director.rotate_status = 503

    with pytest.raises(DirectorUnavailable):
        rotate(identity, director)

    assert (tmp_path / KEY_FILE).read_bytes() == old_pem
    assert identity.record == old_record
    reloaded = AgentIdentity.load(tmp_path)
    assert reloaded is not None and reloaded.record == old_record


def test_a_rotation_proof_holds_only_for_its_runtime_nonce_new_key_and_signer() -> None:
    key = generate_private_key()
    public = load_public_key(public_key_pem(key))
    new = public_key_pem(generate_private_key())
    proof = sign_rotation(key, "rt-1", "nonce-1", new)

    assert rotation_proof_is_valid(public, proof, "rt-1", "nonce-1", new)
    other_key = public_key_pem(generate_private_key())
    for runtime, nonce, pem in (
        ("rt-2", "nonce-1", new),
        ("rt-1", "nonce-2", new),
        ("rt-1", "nonce-1", other_key),
    ):
        assert not rotation_proof_is_valid(public, proof, runtime, nonce, pem), (runtime, nonce)
    stranger = load_public_key(public_key_pem(generate_private_key()))
    assert not rotation_proof_is_valid(stranger, proof, "rt-1", "nonce-1", new)
    assert not rotation_proof_is_valid(public, "not base64 at all!", "rt-1", "nonce-1", new)


def holds(director: FakeDirector, state_dir: Path, file: str = KEY_FILE) -> bool:
    """Whether the director holds the key in `file`."""
    return director.public_key == public_key_pem(load_private_key((state_dir / file).read_bytes()))


def test_the_new_key_is_on_disk_0600_before_the_director_hears_of_it(tmp_path: Path) -> None:
    director = FakeDirector()
    identity = paired(tmp_path, director)
    proposed_while_on_disk: list[bool] = []
    answer = director.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/agent/v1/rotate":
            pending = tmp_path / PENDING_KEY_FILE
            on_disk = public_key_pem(load_private_key(pending.read_bytes()))
            proposed_while_on_disk.append(json.loads(request.content)["public_key"] == on_disk)
            assert stat.S_IMODE(pending.stat().st_mode) == 0o600
        return answer(request)

    director.handle = handle  # type: ignore[method-assign]
    rotate(identity, director)

    assert proposed_while_on_disk == [True]
    assert holds(director, tmp_path) and not (tmp_path / PENDING_KEY_FILE).exists()


def test_a_rotation_whose_answer_is_lost_after_the_commit_completes_with_the_pending_key(
    tmp_path: Path,
) -> None:
    director = FakeDirector()
    identity = paired(tmp_path, director)
    old_pem = (tmp_path / KEY_FILE).read_bytes()
    director.lost_answer = httpx.RemoteProtocolError("Server disconnected without sending a response.")

    rotate(identity, director)

    assert (tmp_path / KEY_FILE).read_bytes() != old_pem
    assert holds(director, tmp_path) and not (tmp_path / PENDING_KEY_FILE).exists()
    reloaded = AgentIdentity.load(tmp_path)
    assert reloaded is not None and director.public_key is not None
    assert reloaded.record.key_id == key_id(director.public_key)
    verify_agent_token(identity.bearer_token(), load_public_key(director.public_key), reloaded.record.key_id)


def test_an_agent_restarted_after_the_director_took_the_pending_key_completes_the_rotation(
    tmp_path: Path,
) -> None:
    director = FakeDirector()
    identity = paired(tmp_path, director)
    director.lost_answer = httpx.ReadTimeout("timed out")  # no answer, and the agent is then killed

    with pytest.raises(DirectorUnavailable):
        rotate(identity, director)
    assert holds(director, tmp_path, PENDING_KEY_FILE) and not holds(director, tmp_path)

    restarted = AgentIdentity.load(tmp_path)
    assert restarted is not None
    assert restarted.key_age() == float("inf"), "an unfinished rotation is not due at once"
    rotate(restarted, director)

    assert holds(director, tmp_path) and not (tmp_path / PENDING_KEY_FILE).exists()
    assert len(director.nonces) == 2, "the director holds the pending key: no second rotation was needed"


def test_a_rotation_the_director_never_took_is_retried_with_the_same_pending_key(tmp_path: Path) -> None:
    director = FakeDirector()
    identity = paired(tmp_path, director)
    old_pem = (tmp_path / KEY_FILE).read_bytes()
    director.rotate_status = 503
    with pytest.raises(DirectorUnavailable):
        rotate(identity, director)
    pending_pem = (tmp_path / PENDING_KEY_FILE).read_bytes()
    assert (tmp_path / KEY_FILE).read_bytes() == old_pem

    director.rotate_status = 200
    restarted = AgentIdentity.load(tmp_path)
    assert restarted is not None
    rotate(restarted, director)

    assert (tmp_path / KEY_FILE).read_bytes() == pending_pem
    assert holds(director, tmp_path) and not (tmp_path / PENDING_KEY_FILE).exists()


def test_a_crash_after_the_pending_key_became_the_key_in_force_leaves_one_key(tmp_path: Path) -> None:
    director = FakeDirector()
    paired(tmp_path, director)
    (tmp_path / PENDING_KEY_FILE).write_bytes((tmp_path / KEY_FILE).read_bytes())

    loaded = AgentIdentity.load(tmp_path)

    assert loaded is not None and not (tmp_path / PENDING_KEY_FILE).exists()
    assert loaded.key_age() < 60


def test_a_revoked_runtime_keeps_both_keys_when_the_director_refuses_them(tmp_path: Path) -> None:
    director = FakeDirector()
    identity = paired(tmp_path, director)
    old_pem = (tmp_path / KEY_FILE).read_bytes()
    director.public_key = public_key_pem(generate_private_key())  # neither of this agent's keys

    with pytest.raises(Unauthorized):
        rotate(identity, director)

    assert (tmp_path / KEY_FILE).read_bytes() == old_pem
    assert (tmp_path / PENDING_KEY_FILE).exists(), "a key the director might hold was deleted"
