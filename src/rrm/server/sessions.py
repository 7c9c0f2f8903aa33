"""Dashboard sign-in without keeping the token in the browser, and sign-out that ends the session.

After a sign-in with an admin (or viewer) token, the browser holds a cookie with a random session id; the
database keeps the id's sha256 with the token's hash and an expiry. Every request looks the session up
again (on every replica, as it is in the database), so the role is always the token's current one, and
sign-out, revoking the token or its expiry end the session at once. The cookie is HttpOnly and
SameSite=Strict (Secure over https), and it is accepted only by the dashboard and the event stream, never
by the write endpoints of the admin API.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from fastapi import Request, Response

from rrm.server.auth import AdminAuth, token_hash
from rrm.store import Database
from rrm.store import tokens as token_store

SESSION_COOKIE = "rrm_session"
SESSION_SECONDS = 12 * 3600


class DashboardSessions:
    def __init__(self, db: Database, auth: AdminAuth, lifetime: float = SESSION_SECONDS) -> None:
        self._db = db
        self._auth = auth
        self.lifetime = lifetime

    def issue(self, token: str, now: datetime | None = None) -> str | None:
        """A new session's id (the cookie value) for a known, unexpired token; None for any other.

        The session ends with the token: never later than the token's expiry."""
        now = now or datetime.now(UTC)
        hashed = token_hash(token)
        grant = self._auth.grant_of_hash(hashed)
        if grant is None or grant.expired(now):
            return None
        expires = now + timedelta(seconds=self.lifetime)
        if grant.expires_at is not None:
            expires = min(expires, grant.expires_at)
        session_id = secrets.token_urlsafe(32)
        with self._db.write(exclusive=False) as session:
            token_store.add_session(session, token_hash(session_id), hashed, now, expires)
        return session_id

    def role(self, value: str | None, now: datetime | None = None) -> str | None:
        """The current role of the token a live session was signed in with; None for anything else."""
        if not value:
            return None
        with self._db.read() as session:
            grant = token_store.grant_of_session(session, token_hash(value), now or datetime.now(UTC))
        return None if grant is None else grant.role

    def role_of(self, request: Request) -> str | None:
        return self.role(request.cookies.get(SESSION_COOKIE))

    def end(self, request: Request) -> None:
        """Sign-out: the session is gone for every replica, whatever the browser does with its cookie."""
        value = request.cookies.get(SESSION_COOKIE)
        if value:
            with self._db.write(exclusive=False) as session:
                token_store.delete_session(session, token_hash(value))

    def set_cookie(self, response: Response, value: str, request: Request) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=int(self.lifetime),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    @staticmethod
    def clear_cookie(response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
