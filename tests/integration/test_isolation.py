"""A runtime's credentials reach only its own state; admin and agent credentials never cross."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from rrm.wire import agent_auth

from .harness import (
    AgentIdentity,
    Fleet,
    ServerProcess,
    apply,
    expect_status,
    files_containing,
    http_binding,
    json_contains,
    pair,
    register,
    relabel,
    runtime,
    secret,
    secret_stores,
    secrets_file_of,
    synced,
)

pytestmark = pytest.mark.integration

SECRET_VALUE = "iso-secret-value-4f1c9b"


@pytest.fixture(scope="module")
def placed(server: ServerProcess) -> None:
    """Label t-iso=a gets a component that uses a secret; t-iso=b one that uses none."""
    apply(
        server.admin,
        [
            secret("iso-secret", {"token": SECRET_VALUE}),
            http_binding("iso-a-web", "t-iso=a", "http://a.invalid/", token_ref=("iso-secret", "token")),
            http_binding("iso-b-web", "t-iso=b", "http://b.invalid/"),
        ],
    )


@pytest.fixture(scope="module")
def runtimes(server: ServerProcess, placed: None) -> tuple[AgentIdentity, AgentIdentity]:
    """Runtimes iso-a and iso-b, paired by the test itself."""
    a = pair(server.url, register(server.admin, "iso-a", labels={"t-iso": "a"}))
    b = pair(server.url, register(server.admin, "iso-b", labels={"t-iso": "b"}))
    return a, b


def names(response: httpx.Response) -> list[str]:
    return sorted(c["metadata"]["name"] for c in response.json()["components"])


def status_body(applied_hash: str | None, version: str) -> dict[str, object]:
    return {"applied_hash": applied_hash, "agent_version": version, "heartbeat_interval": 1.0}


NAMING_B_PARAMS = ("runtime", "runtime_id", "runtime_name", "name", "id")
NAMING_B_HEADERS = ("X-Runtime-Id", "X-Runtime", "X-Runtime-Name")


def naming(b: AgentIdentity) -> tuple[dict[str, str], dict[str, str]]:
    """Query parameters and headers that name runtime b every way a careless server might read."""
    params = {p: (b.runtime_id if p.endswith("id") else b.runtime_name) for p in NAMING_B_PARAMS}
    headers = {h: (b.runtime_id if h.endswith("Id") else b.runtime_name) for h in NAMING_B_HEADERS}
    return params, headers


def test_desired_state_is_always_the_token_runtimes_own(
    runtimes: tuple[AgentIdentity, AgentIdentity],
) -> None:
    a, b = runtimes
    own_a = expect_status(a.desired_state(), 200)
    own_b = expect_status(b.desired_state(), 200)
    assert names(own_a) == ["iso-a-web"] and names(own_b) == ["iso-b-web"]
    assert own_a.headers["etag"].strip('"') == own_a.json()["hash"]
    delivered = {s["name"]: s["data"] for s in own_a.json()["secrets"]}
    assert delivered == {"iso-secret": {"token": SECRET_VALUE}}
    assert own_b.json()["secrets"] == [] and SECRET_VALUE not in own_b.text

    params, headers = naming(b)
    misdirected = expect_status(a.desired_state(params=params, headers=headers), 200)
    assert misdirected.json()["hash"] == own_a.json()["hash"], "a query or header chose another runtime"
    assert names(misdirected) == ["iso-a-web"]


def test_status_is_recorded_only_for_the_token_runtime(
    admin: httpx.Client, runtimes: tuple[AgentIdentity, AgentIdentity]
) -> None:
    a, b = runtimes
    a_hash = expect_status(a.desired_state(), 200).json()["hash"]
    params, headers = naming(b)
    response = a.request(
        "PUT", "/agent/v1/status", params=params, headers=headers, json=status_body(a_hash, "iso-status-test")
    )
    expect_status(response, 204)
    seen_a, seen_b = runtime(admin, "iso-a"), runtime(admin, "iso-b")
    assert seen_a["applied_hash"] == a_hash and seen_a["agent_version"] == "iso-status-test"
    assert seen_b["applied_hash"] is None and seen_b["agent_version"] != "iso-status-test"


ENDPOINTS: list[tuple[str, str, Callable[[], dict[str, object]] | None]] = [
    ("GET", "/agent/v1/desired-state", None),
    ("PUT", "/agent/v1/status", lambda: status_body(None, "forged")),
    (
        "POST",
        "/agent/v1/rotate",
        lambda: {"public_key": agent_auth.public_key_pem(agent_auth.generate_private_key())},
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=["desired-state", "status", "rotate"])
def test_forged_or_foreign_tokens_are_refused(
    server: ServerProcess,
    admin: httpx.Client,
    runtimes: tuple[AgentIdentity, AgentIdentity],
    method: str,
    path: str,
    body: Callable[[], dict[str, object]] | None,
) -> None:
    a, b = runtimes
    forged = {
        "signed by a, claiming b": a.token(sub=b.runtime_id),
        "signed by a, claiming b's key id": a.token(sub=b.runtime_id, kid=b.kid),
        "signed by a with b's key id": a.token(kid=b.kid),
        "lives longer than allowed": a.token(lifetime=agent_auth.MAX_LIFETIME_SECONDS * 6),
        "admin token": server.admin_token,
        "not a token": "not.a.jwt",
    }
    for what, token in forged.items():
        response = httpx.request(
            method,
            f"{server.url}{path}",
            headers={"Authorization": f"Bearer {token}"},
            json=body() if body else None,
            timeout=30,
        )
        assert response.status_code == 401, f"{what}: {method} {path} answered {response.status_code}"
    anonymous = httpx.request(method, f"{server.url}{path}", json=body() if body else None, timeout=30)
    assert anonymous.status_code == 401, f"no token: {method} {path} answered {anonymous.status_code}"
    assert anonymous.json() == {"detail": "missing bearer token"}
    assert anonymous.headers["www-authenticate"] == "Bearer"
    # Nothing forged changed b: its own key still works and its status was not written.
    assert expect_status(b.desired_state(), 200).json()["components"]
    assert "forged" not in (
        runtime(admin, "iso-a")["agent_version"],
        runtime(admin, "iso-b")["agent_version"],
    )


def test_rotation_only_rotates_the_token_runtime(
    server: ServerProcess, runtimes: tuple[AgentIdentity, AgentIdentity]
) -> None:
    _, b = runtimes
    rotating = pair(server.url, register(server.admin, "iso-rotating", labels={"t-iso": "rotating"}))
    new_key = agent_auth.generate_private_key()
    new_public = agent_auth.public_key_pem(new_key)
    params, headers = naming(b)
    challenge = rotating.request("POST", "/agent/v1/rotate/challenge", params=params, headers=headers)
    nonce = expect_status(challenge, 200).json()["nonce"]
    proof = agent_auth.sign_rotation(rotating.key, rotating.runtime_id, nonce, new_public)
    answer = rotating.request(
        "POST",
        "/agent/v1/rotate",
        params=params,
        headers=headers,
        json={"public_key": new_public, "nonce": nonce, "proof": proof},
    )
    new_kid = expect_status(answer, 200).json()["key_id"]
    assert rotating.desired_state().status_code == 401, "the old key still works after rotation"
    rotated = AgentIdentity(server.url, rotating.runtime_id, rotating.runtime_name, new_key, new_kid)
    expect_status(rotated.desired_state(), 200)
    expect_status(b.desired_state(), 200)


def test_admin_and_agent_credentials_do_not_cross(
    server: ServerProcess, runtimes: tuple[AgentIdentity, AgentIdentity]
) -> None:
    a, _ = runtimes
    agent_headers = a.headers()
    for method, path in (("GET", "/api/v1/runtimes"), ("GET", "/api/v1/secrets"), ("GET", "/metrics")):
        answer = httpx.request(method, f"{server.url}{path}", headers=agent_headers, timeout=30)
        assert answer.status_code == 401, f"agent token on {path}: {answer.status_code}"
        assert httpx.request(method, f"{server.url}{path}", timeout=30).status_code == 401, (
            f"no token on {path}"
        )
    applied = httpx.post(
        f"{server.url}/api/v1/apply",
        headers=agent_headers,
        json={"documents": [http_binding("iso-forged", "t-iso=a", "http://forged.invalid/")]},
        timeout=30,
    )
    assert applied.status_code == 401
    assert "iso-forged" not in [c["name"] for c in server.admin.get("/api/v1/components").json()]
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
    expect_status(server.admin.get("/metrics"), 200)


@pytest.mark.usefixtures("placed")
def test_a_secret_reaches_only_agents_whose_components_use_it(fleet: Fleet, admin: httpx.Client) -> None:
    user = fleet.agent("iso-user", {"t-iso": "a"})
    bystander = fleet.agent("iso-bystander", {"t-iso": "b"})
    fleet.wait_files(user, lambda c: "iso-a-web" in c, "the secret's user gets its component")
    fleet.wait_files(bystander, lambda c: "iso-b-web" in c, "the bystander gets its own component")
    fleet.wait_runtime("iso-bystander", synced, "bystander Synced")
    stores = fleet.wait_until(lambda: secret_stores(user.resources_path), "the user gets a secret store")
    assert json_contains(json.loads(secrets_file_of(next(iter(stores.values()))).read_text()), SECRET_VALUE)
    leaked = files_containing([bystander.state_dir, bystander.resources_path], SECRET_VALUE)
    assert not leaked, f"the secret reached a runtime that does not use it: {leaked}"

    relabel(admin, "iso-user", {"t-iso": "b"})
    fleet.wait_files(
        user, lambda c: set(c) == {"iso-b-web"}, "the user no longer runs the secret's component"
    )
    fleet.wait_until(
        lambda: not files_containing([user.state_dir, user.resources_path], SECRET_VALUE),
        "the secret leaves the files of a runtime that stopped using it",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"applied_hash": None, "agent_version": "bad", "heartbeat_interval": -1}, "heartbeat_interval"),
        (
            {"applied_hash": None, "agent_version": "bad", "heartbeat_interval": 1, "resources": "x"},
            "resources",
        ),
        ("not json", ""),
    ],
)
def test_a_malformed_status_report_is_refused_naming_the_field_and_stores_nothing(
    admin: httpx.Client, runtimes: tuple[AgentIdentity, AgentIdentity], body: object, field: str
) -> None:
    a, _ = runtimes
    before = runtime(admin, "iso-a")
    content = body if isinstance(body, str) else json.dumps(body)
    answer = a.request(
        "PUT", "/agent/v1/status", content=content, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert all(problem["loc"][0] == "body" for problem in answer.json()["detail"])
    assert field in answer.text
    after = runtime(admin, "iso-a")
    assert after["agent_version"] == before["agent_version"] != "bad"


def test_the_agent_endpoints_refuse_other_methods(
    server: ServerProcess, runtimes: tuple[AgentIdentity, ...]
) -> None:
    """The long-poll and the status report are served ahead of the app's routing; other methods on their
    paths still get the app's 405."""
    a = runtimes[0]
    for method, path in (("POST", "/agent/v1/desired-state"), ("GET", "/agent/v1/status")):
        response = a.request(method, path)
        assert response.status_code == 405, f"{method} {path} answered {response.status_code}"
