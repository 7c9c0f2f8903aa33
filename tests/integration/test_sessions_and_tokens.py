"""Dashboard sessions and admin tokens against real `rrm server` processes: sign-out ends a session on every
replica, tokens expire and can be listed and revoked (API and CLI), a cross-site request cannot sign in or
out, and no credential reaches the access log."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from .databases import fresh_postgres_database
from .harness import ServerProcess, child_env, expect_status, wait_until

pytestmark = pytest.mark.integration

SESSION_COOKIE = "rrm_session"


def browser(server: ServerProcess, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False, headers=headers)


def sign_in(server: ServerProcess, token: str | None = None, **headers: str) -> httpx.Response:
    with browser(server, **headers) as client:
        return client.post("/ui/login", data={"token": token or server.admin_token, "next": "/ui"})


def session_of(server: ServerProcess, token: str | None = None) -> str:
    return expect_status(sign_in(server, token), 303).cookies[SESSION_COOKIE]


def page_status(server: ServerProcess, session: str) -> int:
    """200 for a live session; 303 (to the sign-in form) for any other."""
    with browser(server) as client:
        client.cookies.set(SESSION_COOKIE, session)
        return client.get("/ui/runtimes").status_code


def create_token(server: ServerProcess, role: str, ttl_seconds: int | None = None) -> dict[str, str]:
    body: dict[str, object] = {"role": role, "description": "test"}
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    return dict(expect_status(server.admin.post("/api/v1/tokens", json=body), 201).json())


def api_as(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"})


# sessions ----------------------------------------------------------------------------------------------


def test_sign_out_ends_the_session_even_for_a_copy_of_its_cookie(server: ServerProcess) -> None:
    kept, other = session_of(server), session_of(server)
    assert server.admin_token not in kept
    assert page_status(server, kept) == 200
    with browser(server) as client:
        client.cookies.set(SESSION_COOKIE, kept)
        expect_status(client.post("/ui/logout"), 303)
    assert page_status(server, kept) == 303
    with browser(server) as client:
        client.cookies.set(SESSION_COOKIE, kept)
        expect_status(client.get("/ui/fragments/fleet"), 401)
        expect_status(client.get("/api/v1/events/stream"), 401)
    assert page_status(server, other) == 200  # another sign-in of the same token goes on


class Replicas:
    """Two servers on one PostgreSQL database, sharing the admin token and the secret key."""

    def __init__(self, workdir: Path, database_url: str) -> None:
        first = ServerProcess(workdir / "a", workdir / "a.log", database_url=database_url)
        first.start()
        self.servers = [first]
        (workdir / "b").mkdir()
        for name in ("admin-token", "secret-key"):
            shutil.copy(first.data_dir / name, workdir / "b" / name)
        second = ServerProcess(workdir / "b", workdir / "b.log", database_url=database_url)
        self.servers.append(second)
        second.start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    with fresh_postgres_database() as url:
        pair = Replicas(tmp_path, url)
        try:
            yield pair
        finally:
            pair.stop()


def test_on_postgresql_sign_out_and_revocation_reach_every_replica(replicas: Replicas) -> None:
    a, b = replicas.servers
    session = session_of(a)
    assert page_status(b, session) == 200
    with browser(a) as client:
        client.cookies.set(SESSION_COOKIE, session)
        expect_status(client.post("/ui/logout"), 303)
    assert page_status(b, session) == 303  # at once: the session is in the database

    viewer = create_token(a, "viewer")
    session = session_of(b, viewer["token"])
    with api_as(b, viewer["token"]) as api:
        expect_status(api.get("/api/v1/runtimes"), 200)
        expect_status(a.admin.delete(f"/api/v1/tokens/{viewer['id']}"), 200)
        assert page_status(b, session) == 303  # its sessions at once
        wait_until(lambda: api.get("/api/v1/runtimes").status_code == 401, 15, "b still takes the token")


# tokens ------------------------------------------------------------------------------------------------


def test_tokens_are_listed_by_id_and_revoked_with_their_sessions(server: ServerProcess) -> None:
    viewer = create_token(server, "viewer")
    assert viewer["token"].startswith("rrmat_") and viewer["expires_at"] is None
    listed = expect_status(server.admin.get("/api/v1/tokens"), 200).json()
    mine = [t for t in listed if t["id"] == viewer["id"]]
    assert mine == [{k: v for k, v in viewer.items() if k != "token"}]
    assert viewer["token"] not in json.dumps(listed)
    session = session_of(server, viewer["token"])
    with api_as(server, viewer["token"]) as api:
        expect_status(api.get("/api/v1/tokens"), 403)  # admins only
        expect_status(api.delete(f"/api/v1/tokens/{viewer['id']}"), 403)
        revoked = expect_status(server.admin.delete(f"/api/v1/tokens/{viewer['id']}"), 200).json()
        assert revoked["id"] == viewer["id"] and "token" not in revoked and "hash" not in revoked
        expect_status(api.get("/api/v1/runtimes"), 401)
    assert page_status(server, session) == 303
    listed = expect_status(server.admin.get("/api/v1/tokens"), 200).json()
    assert viewer["id"] not in [t["id"] for t in listed]
    expect_status(server.admin.delete(f"/api/v1/tokens/{viewer['id']}"), 404)
    for bad in ("short", "not-hex-at-all", "ABCDEF0123"):
        expect_status(server.admin.delete(f"/api/v1/tokens/{bad}"), 422)
    expect_status(server.admin.post("/api/v1/tokens", json={"role": "admin", "ttl_seconds": 0}), 422)


def test_the_last_admin_token_cannot_be_revoked(own_server: ServerProcess) -> None:
    listed = expect_status(own_server.admin.get("/api/v1/tokens"), 200).json()
    assert [t["role"] for t in listed] == ["admin"]
    refused = expect_status(own_server.admin.delete(f"/api/v1/tokens/{listed[0]['id']}"), 409)
    assert "last admin token" in refused.text
    other = create_token(own_server, "admin")
    expect_status(own_server.admin.delete(f"/api/v1/tokens/{listed[0]['id']}"), 200)
    with api_as(own_server, other["token"]) as api:
        expect_status(api.delete(f"/api/v1/tokens/{other['id']}"), 409)
    expect_status(own_server.admin.get("/api/v1/runtimes"), 401)


def test_an_expired_token_is_refused_saying_expired(server: ServerProcess) -> None:
    short = create_token(server, "admin", ttl_seconds=2)
    assert short["expires_at"] is not None
    with api_as(server, short["token"]) as api:

        def refused_after_expiry() -> httpx.Response | None:
            response = api.get("/api/v1/runtimes")
            return response if response.status_code == 401 else None

        response = wait_until(refused_after_expiry, 30, "the expired token is still taken")
        assert response is not None and "expired" in response.json()["detail"]
    refused = expect_status(sign_in(server, short["token"]), 401)
    assert SESSION_COOKIE not in refused.cookies
    listed = expect_status(server.admin.get("/api/v1/tokens"), 200).json()
    assert [t["expired"] for t in listed if t["id"] == short["id"]] == [True]


def rrm(server: ServerProcess, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = child_env({"RRM_URL": server.url, "RRM_TOKEN": token})
    return subprocess.run(
        [sys.executable, "-m", "rrm", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_token_commands_create_with_a_ttl_list_and_revoke(server: ServerProcess) -> None:
    created = rrm(server, server.admin_token, "token", "create", "--role", "viewer", "--ttl", "24h")
    assert created.returncode == 0, created.stderr
    fields = dict(line.split(":", 1) for line in created.stdout.splitlines() if ":" in line[:10])
    token, token_id = fields["token"].strip(), fields["id"].strip()
    listed = rrm(server, server.admin_token, "token", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    (mine,) = [t for t in json.loads(listed.stdout) if t["id"] == token_id]
    assert mine["role"] == "viewer" and mine["expires_at"] is not None and not mine["expired"]
    assert token not in listed.stdout
    table = rrm(server, server.admin_token, "token", "list")
    assert any(line.startswith(token_id) and "in 23h" in line for line in table.stdout.splitlines())
    refused = rrm(server, token, "token", "list")
    assert refused.returncode == 1 and "may only read" in refused.stderr
    revoked = rrm(server, server.admin_token, "token", "revoke", token_id)
    assert revoked.returncode == 0 and token_id in revoked.stdout, revoked.stderr
    assert rrm(server, token, "get", "runtimes").returncode == 1


# cross-site requests -----------------------------------------------------------------------------------

CROSS_SITE: list[Mapping[str, str]] = [
    {"Origin": "https://attacker.invalid"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://dashboard.attacker.invalid"},
]


def test_a_cross_site_sign_in_or_sign_out_is_refused(server: ServerProcess) -> None:
    for headers in CROSS_SITE:
        refused = expect_status(sign_in(server, **headers), 403)
        assert SESSION_COOKIE not in refused.cookies, headers
    own_origin = server.url
    expect_status(sign_in(server, Origin=own_origin), 303)
    expect_status(sign_in(server, **{"Sec-Fetch-Site": "same-origin", "Origin": own_origin}), 303)
    session = session_of(server)
    for headers in CROSS_SITE:
        with browser(server, **headers) as client:
            client.cookies.set(SESSION_COOKIE, session)
            expect_status(client.post("/ui/logout"), 403)
            expect_status(client.get("/ui/runtimes"), 200)  # reads (links from elsewhere) still work
    assert page_status(server, session) == 200


# credentials in URLs and the access log --------------------------------------------------------------


class AccessLoggingServer(ServerProcess):
    def _launch(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        super()._launch(args, {**(env or {}), "RRM_ACCESS_LOG": "1"})


@pytest.fixture
def logging_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = AccessLoggingServer(tmp_path / "data", tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_sign_in_link_carries_the_token_after_the_hash_never_in_the_query(server: ServerProcess) -> None:
    token = server.admin_token
    with browser(server) as client:
        old_link = expect_status(client.get("/ui/login", params={"token": token, "next": "/ui"}), 400)
        assert SESSION_COOKIE not in old_link.cookies and "after #" in old_link.text
        login_page = expect_status(client.get(f"/ui/login#token={token}"), 200)  # the fragment is not sent
        assert login_page.request.url.query == b"" and token not in str(login_page.request.url)
        assert '<script src="/ui/static/login.js"' in login_page.text and 'id="login-form"' in login_page.text
        assert "location.hash" in expect_status(client.get("/ui/static/login.js"), 200).text


def test_no_token_or_query_string_reaches_the_access_log(logging_server: ServerProcess) -> None:
    server, token = logging_server, logging_server.admin_token
    with browser(server) as client:
        client.get("/ui/login", params={"token": token, "next": "/ui"})  # a link of the old kind
        expect_status(client.post("/ui/login", data={"token": token}), 303)
        expect_status(client.get("/ui/runtimes", params={"selector": "secret-query=marker"}), 200)
    wait_until(lambda: "GET /ui/runtimes?[redacted]" in server.log_path.read_text(), 15, server.tail)
    log = server.log_path.read_text()
    assert "GET /ui/login?[redacted]" in log
    assert token not in log and token.split("_", 1)[1] not in log
    assert "secret-query" not in log and "marker" not in log
