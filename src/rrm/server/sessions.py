"""Dashboard sign-in without keeping the token in the browser.

After a sign-in with an admin (or viewer) token, the browser holds a cookie naming the token by its sha256
and an expiry, signed with HMAC-SHA256 under a key derived from the server's secret key. The raw token is
never in the cookie, and every request looks the hash up among the known tokens again, so the role is
always the token's current one. The cookie is HttpOnly and SameSite=Strict (Secure over https), and it is
accepted only by the dashboard and the event stream, never by the write endpoints of the admin API.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time

from fastapi import Request, Response

from rrm.server.auth import AdminAuth, token_hash

SESSION_COOKIE = "rrm_session"
SESSION_SECONDS = 12 * 3600
KEY_PURPOSE = "rrm dashboard sessions v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DashboardSessions:
    def __init__(self, key: bytes, auth: AdminAuth, lifetime: float = SESSION_SECONDS) -> None:
        self._key = key
        self._auth = auth
        self.lifetime = lifetime

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, token: str, now: float | None = None) -> str | None:
        """The cookie value for a known token; None for an unknown one."""
        hashed = token_hash(token)
        if self._auth.role_of_hash(hashed) is None:
            return None
        expires = int((time.time() if now is None else now) + self.lifetime)
        payload = _b64(json.dumps({"h": hashed, "exp": expires}, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def role(self, value: str | None, now: float | None = None) -> str | None:
        """The current role of the token a cookie names; None when forged, expired or the token is gone."""
        if not value or "." not in value:
            return None
        payload, signature = value.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            claims = json.loads(_unb64(payload))
            hashed, expires = str(claims["h"]), float(claims["exp"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        if expires <= (time.time() if now is None else now):
            return None
        return self._auth.role_of_hash(hashed)

    def role_of(self, request: Request) -> str | None:
        return self.role(request.cookies.get(SESSION_COOKIE))

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
