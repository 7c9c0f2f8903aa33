"""Pairing and runtime identity: single-use expiring tokens, restarts without a token, revocation."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from rrm.wire import agent_auth

from .harness import (
    Fleet,
    ServerProcess,
    apply,
    condition,
    condition_true,
    expect_status,
    files_containing,
    holds_for,
    http_binding,
    metadata_value,
    pair,
    pair_request,
    parse_time,
    register,
    registration,
    runtime,
    synced,
    wait_until,
)

pytestmark = pytest.mark.integration
JSON_BODY = {"Content-Type": "application/json"}


def test_agent_pairs_then_restarts_without_a_token(fleet: Fleet, admin: httpx.Client) -> None:
    agent = fleet.agent("pair-restart", {"t-pair": "restart"})
    detail = fleet.wait_runtime("pair-restart", lambda d: condition_true(d, "Connected"), "Connected")
    assert detail["paired"] is True and detail["kind"] == "selfhosted"

    apply(admin, [http_binding("pair-restart-web", "t-pair=restart", "http://one.invalid/")])
    fleet.wait_files(agent, lambda c: "pair-restart-web" in c, "component delivered")

    agent.stop()
    agent.start()  # no token: the identity made at pairing is in the state dir
    apply(admin, [http_binding("pair-restart-web", "t-pair=restart", "http://two.invalid/")])
    fleet.wait_files(
        agent,
        lambda c: metadata_value(c.get("pair-restart-web", {}), "url") == "http://two.invalid/",
        "update delivered after a restart without a token",
    )
    fleet.wait_runtime("pair-restart", lambda d: condition_true(d, "Connected") and synced(d), "Synced")


def test_agent_without_token_or_identity_is_a_configuration_error(fleet: Fleet) -> None:
    agent = fleet.agent_process("pair-no-token")
    agent.start()
    fleet.wait_until(lambda: agent.returncode is not None, "an agent with no token and no identity exits")
    assert agent.returncode == 2, fleet.explain(f"exit code {agent.returncode}, expected 2")


def test_pairing_token_is_single_use_and_stored_hashed(server: ServerProcess, admin: httpx.Client) -> None:
    token = register(admin, "pair-once", labels={"t-pair": "once"})
    first = pair(server.url, token)
    assert first.runtime_name == "pair-once"
    assert first.kid == agent_auth.key_id(agent_auth.public_key_pem(first.key))

    again = pair_request(server.url, token, agent_auth.generate_private_key())
    assert again.status_code == 401, again.text
    # The first pairing still stands: the refused attempt did not replace the key.
    expect_status(first.desired_state(), 200)
    assert runtime(admin, "pair-once")["paired"] is True
    leaked = files_containing([server.data_dir], token)
    assert not leaked, f"the pairing token is stored in clear in {leaked}"


def test_expired_pairing_token_is_refused(server: ServerProcess, admin: httpx.Client) -> None:
    answer = registration(admin, "pair-expired", labels={"t-pair": "expired"}, token_ttl_seconds=1)
    expires_at = parse_time(answer["expires_at"])
    assert expires_at <= time.time() + 5, f"a 1 s token expires at {answer['expires_at']}"
    wait_until(lambda: time.time() > expires_at + 1, 15, "the pairing token's expiry time to pass")

    refused = pair_request(server.url, answer["pairing_token"], agent_auth.generate_private_key())
    assert refused.status_code == 401, refused.text
    assert runtime(admin, "pair-expired")["paired"] is False

    fresh = expect_status(admin.post("/api/v1/runtimes/pair-expired/token", json={"ttl_seconds": 600}), 201)
    assert pair(server.url, fresh.json()["pairing_token"]).runtime_name == "pair-expired"


def test_unknown_pairing_token_is_refused(server: ServerProcess) -> None:
    refused = pair_request(server.url, "no-such-token", agent_auth.generate_private_key())
    assert refused.status_code == 401, refused.text


def test_a_pairing_body_is_refused_naming_the_field_and_no_value(server: ServerProcess) -> None:
    for body, field in (({"public_key": "k"}, "token"), ({"token": "", "public_key": "k"}, "token")):
        refused = httpx.post(f"{server.url}/agent/v1/pair", json=body, timeout=30)
        assert refused.status_code == 422, refused.text
        assert [problem["loc"] for problem in refused.json()["detail"]] == [["body", field]]
    typed = httpx.post(
        f"{server.url}/agent/v1/pair", json={"token": 90210314159, "public_key": "k"}, timeout=30
    )
    assert typed.status_code == 422 and "90210314159" not in typed.text
    key = agent_auth.public_key_pem(agent_auth.generate_private_key())
    for field in ("token", "agent_version"):  # a lone surrogate (a JSON escape) is no text: 422, not 500
        body = json.dumps({"token": "rrmpt_x", "public_key": key, field: "rrmpt_\ud800"})
        lone = httpx.post(f"{server.url}/agent/v1/pair", content=body, headers=JSON_BODY, timeout=30)
        assert lone.status_code == 422, lone.text


def test_the_api_docs_describe_the_agent_bodies_from_the_protocol(admin: httpx.Client) -> None:
    paths = expect_status(admin.get("/openapi.json"), 200).json()["paths"]

    def body(path: str, method: str, status: str | None = None) -> dict[str, Any]:
        operation = paths[f"/agent/v1/{path}"][method]
        described = operation["responses"][status] if status else operation["requestBody"]
        return dict(described["content"]["application/json"]["schema"])

    pairing = body("pair", "post")
    assert pairing["required"] == ["token", "public_key"] and pairing["properties"]["token"]["minLength"] == 1
    assert set(body("pair", "post", "201")["properties"]) == {"runtime_id", "runtime_name", "kind", "key_id"}
    report = body("status", "put")["properties"]
    assert report["resources"]["items"]["properties"]["state"]["enum"] == ["applied", "failed", "pending"]
    assert set(body("desired-state", "get", "200")["required"]) == {"hash", "components"}
    assert {"200", "304"} <= set(paths["/agent/v1/desired-state"]["get"]["responses"])


def test_revoked_runtime_is_refused_on_every_agent_endpoint(
    server: ServerProcess, admin: httpx.Client
) -> None:
    identity = pair(server.url, register(admin, "pair-revoked", labels={"t-pair": "revoked"}))
    expect_status(identity.desired_state(), 200)

    view = expect_status(admin.post("/api/v1/runtimes/pair-revoked/revoke"), 200).json()
    assert view["paired"] is False

    assert identity.desired_state().status_code == 401
    assert identity.request("PUT", "/agent/v1/status", json={"applied_hash": None}).status_code == 401
    new_key = agent_auth.public_key_pem(agent_auth.generate_private_key())
    assert identity.request("POST", "/agent/v1/rotate", json={"public_key": new_key}).status_code == 401


def test_revoked_agent_keeps_its_files_until_paired_again(fleet: Fleet, admin: httpx.Client) -> None:
    # Connected turns False after missed heartbeats: a 1 s heartbeat instead of the default minute
    agent = fleet.agent("pair-revoke-agent", {"t-pair": "revoke-agent"}, heartbeat_interval=1.0)
    apply(admin, [http_binding("pair-revoke-web", "t-pair=revoke-agent", "http://kept.invalid/")])
    fleet.wait_files(agent, lambda c: "pair-revoke-web" in c, "component delivered")
    fleet.wait_runtime("pair-revoke-agent", synced, "Synced")
    before = {p.name: p.read_bytes() for p in agent.resources_path.iterdir()}

    expect_status(admin.post("/api/v1/runtimes/pair-revoke-agent/revoke"), 200)
    fleet.wait_runtime(
        "pair-revoke-agent",
        lambda d: (condition(d, "Connected") or {}).get("status") == "False",
        "Connected False once the revoked agent's heartbeats are refused",
    )
    holds_for(
        lambda: {p.name: p.read_bytes() for p in agent.resources_path.iterdir()} == before,
        3,
        lambda: fleet.explain("a revoked agent changed its files"),
    )

    token = expect_status(
        admin.post("/api/v1/runtimes/pair-revoke-agent/token", json={"ttl_seconds": 600}), 201
    ).json()
    agent.stop()
    agent.start(token["pairing_token"])
    apply(admin, [http_binding("pair-revoke-web", "t-pair=revoke-agent", "http://again.invalid/")])
    fleet.wait_files(
        agent,
        lambda c: metadata_value(c.get("pair-revoke-web", {}), "url") == "http://again.invalid/",
        "delivery resumes after pairing again with a new token",
    )
    fleet.wait_runtime(
        "pair-revoke-agent", lambda d: d["paired"] and condition_true(d, "Connected"), "re-paired"
    )
