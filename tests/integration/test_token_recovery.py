"""The way back in when no admin token works any more: `rrm token create --data-dir` writes one into the
control plane's database, and the running server accepts it at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rrm.server.auth import token_hash
from rrm.store.tokens import token_id

from .harness import ServerProcess, child_env, expect_status, wait_until

pytestmark = pytest.mark.integration
SHORT_TTL_SECONDS = 5


def offline_create(server: ServerProcess, *options: str) -> subprocess.CompletedProcess[str]:
    """`rrm token create` with no API address nor token in its environment: only the database."""
    args = [sys.executable, "-m", "rrm", "token", "create", "--role", "admin", *options]
    return subprocess.run(args, env=child_env(), capture_output=True, text=True, timeout=60)


def database_options(server: ServerProcess) -> list[str]:
    options = ["--data-dir", str(server.data_dir)]
    return options + (["--database-url", server.database_url] if server.database_url else [])


def client(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def lock_out(server: ServerProcess) -> None:
    """Every admin token gone: the first one revoked by a second that then expires."""
    first = server.admin_token
    created = server.admin.post("/api/v1/tokens", json={"role": "admin", "ttl_seconds": SHORT_TTL_SECONDS})
    second = expect_status(created, 201).json()["token"]
    with client(server, second) as api:
        expect_status(api.delete(f"/api/v1/tokens/{token_id(token_hash(first))}"), 200)
        wait_until(
            lambda: api.get("/api/v1/tokens").status_code == 401, 30, "the short-lived token still works"
        )
        assert "token expired" in api.get("/api/v1/tokens").text
    expect_status(server.admin.get("/api/v1/tokens"), 401)


def test_an_operator_locked_out_gets_back_in_through_the_database(own_server: ServerProcess) -> None:
    lock_out(own_server)

    result = offline_create(
        own_server, *database_options(own_server), "--description", "recovery", "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["role"] == "admin" and created["token"].startswith("rrmat_")
    with client(own_server, created["token"]) as api:
        listed = expect_status(api.get("/api/v1/tokens"), 200).json()
        assert [(t["id"], t["description"]) for t in listed if not t["expired"]] == [
            (created["id"], "recovery")
        ]
        events = expect_status(api.get("/api/v1/events", params={"after": 0, "limit": 1000}), 200).json()
        recorded = [e for e in events if e["subject"] == f"token/{created['id']}"]
        assert [e["type"] for e in recorded] == ["TokenCreated"]
        assert "rrm token create --data-dir" in recorded[0]["message"]


def test_an_offline_token_needs_the_control_planes_database(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    nowhere = tmp_path / "not-a-data-dir"
    result = offline_create(own_server, "--data-dir", str(nowhere))
    assert result.returncode == 1
    assert f"no control plane database at {nowhere / 'rrm.db'}" in result.stderr
    assert not nowhere.exists() and "rrmat_" not in result.stdout
    listed = expect_status(own_server.admin.get("/api/v1/tokens"), 200).json()
    assert len(listed) == 1
