"""Dashboard sessions and admin tokens on a real (SQLite) database: the cookie holds a random id, never the
token; sign-out, revocation and expiry end a session; an expired token is refused saying so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import HTTPException

from rrm.server.auth import AdminAuth, token_hash
from rrm.server.sessions import SESSION_COOKIE, DashboardSessions
from rrm.store import Database
from rrm.store import tokens as token_store
from rrm.store.tables import AdminToken, DashboardSession

TOKEN = "rrmat_the-token"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'rrm.db'}")
    database.migrate()
    add(database, TOKEN, "viewer")
    return database


def add(db: Database, token: str, role: str, expires_at: datetime | None = None) -> None:
    with db.write() as session:
        token_store.add_token(session, token_hash(token), role, "test", NOW, expires_at)


def sessions(db: Database, lifetime: float = 60) -> DashboardSessions:
    return DashboardSessions(db, AdminAuth(db, fresh_seconds=0), lifetime=lifetime)


class Cookies:
    """What `DashboardSessions.end` reads of a request."""

    def __init__(self, value: str | None) -> None:
        self.cookies = {SESSION_COOKIE: value} if value else {}


def test_a_known_token_gets_a_random_session_id_and_only_hashes_are_stored(db: Database) -> None:
    signer = sessions(db)
    first, second = signer.issue(TOKEN, now=NOW), signer.issue(TOKEN, now=NOW)
    assert first is not None and second is not None and first != second
    assert TOKEN not in first and token_hash(TOKEN) not in first
    assert signer.role(first, now=NOW + timedelta(seconds=1)) == "viewer"
    assert signer.issue("rrmat_unknown", now=NOW) is None
    with db.read() as session:
        stored = {row.session_hash for row in session.query(DashboardSession)}
    assert stored == {token_hash(first), token_hash(second)}


def test_forged_expired_or_missing_sessions_are_refused(db: Database) -> None:
    signer = sessions(db)
    cookie = signer.issue(TOKEN, now=NOW)
    assert cookie is not None
    assert signer.role(cookie, now=NOW + timedelta(seconds=61)) is None
    assert signer.role(cookie[:-1], now=NOW) is None
    assert signer.role(token_hash(cookie), now=NOW) is None
    assert signer.role(None, now=NOW) is None


def test_sign_out_ends_that_session_only(db: Database) -> None:
    signer = sessions(db)
    ended, kept = signer.issue(TOKEN), signer.issue(TOKEN)
    signer.end(Cookies(ended))  # type: ignore[arg-type]
    assert signer.role(ended) is None
    assert signer.role(kept) == "viewer"
    assert sessions(db).role(ended) is None  # another replica on the same database


def test_the_role_is_the_tokens_current_one_and_revocation_ends_its_sessions(db: Database) -> None:
    signer = sessions(db)
    cookie = signer.issue(TOKEN)
    with db.write() as session:
        row = session.get(AdminToken, token_hash(TOKEN))
        assert row is not None
        row.role = "admin"
    assert signer.role(cookie) == "admin"
    with db.write() as session:
        token_store.delete_token(session, token_hash(TOKEN))
    assert signer.role(cookie) is None
    with db.read() as session:
        assert session.query(DashboardSession).count() == 0


def test_a_session_ends_no_later_than_its_token(db: Database) -> None:
    add(db, "rrmat_short", "admin", expires_at=NOW + timedelta(seconds=10))
    signer = sessions(db, lifetime=3600)
    cookie = signer.issue("rrmat_short", now=NOW)
    assert cookie is not None
    assert signer.role(cookie, now=NOW + timedelta(seconds=9)) == "admin"
    assert signer.role(cookie, now=NOW + timedelta(seconds=10)) is None
    assert signer.issue("rrmat_short", now=NOW + timedelta(seconds=10)) is None


def test_an_expired_token_is_refused_with_a_401_that_says_expired(db: Database) -> None:
    add(db, "rrmat_old", "admin", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(HTTPException) as refused:
        AdminAuth(db).role("rrmat_old")
    assert refused.value.status_code == 401 and "expired" in str(refused.value.detail)
    assert AdminAuth(db).role("rrmat_unknown") is None
    assert AdminAuth(db).role(TOKEN) == "viewer"


def test_a_token_revoked_through_another_replica_stops_once_the_cached_grant_is_stale(db: Database) -> None:
    here, there = AdminAuth(db, fresh_seconds=3600), AdminAuth(db, fresh_seconds=0)
    assert here.role(TOKEN) == there.role(TOKEN) == "viewer"
    with db.write() as session:
        token_store.delete_token(session, token_hash(TOKEN))
    assert there.role(TOKEN) is None
    assert here.role(TOKEN) == "viewer"  # within `fresh_seconds` the grant read before still holds
    here.remember(token_hash(TOKEN), None)  # what the replica that revoked it does
    assert here.role(TOKEN) is None
