"""Dashboard session cookies: signed, expiring, never the token, and only as good as the token still is."""

from __future__ import annotations

from rrm.server.auth import AdminAuth, token_hash
from rrm.server.secretbox import SecretBox
from rrm.server.sessions import KEY_PURPOSE, DashboardSessions

TOKEN = "rrmat_the-token"


def sessions(key: bytes = b"k" * 32) -> tuple[DashboardSessions, AdminAuth]:
    auth = AdminAuth({token_hash(TOKEN): "viewer"})
    return DashboardSessions(SecretBox(key).derive_key(KEY_PURPOSE), auth, lifetime=60), auth


def test_a_known_token_gets_a_cookie_that_holds_neither_the_token_nor_the_key() -> None:
    signer, _ = sessions()
    cookie = signer.issue(TOKEN, now=1000)
    assert cookie is not None and TOKEN not in cookie and "the-token" not in cookie
    assert signer.role(cookie, now=1001) == "viewer"
    assert signer.issue("rrmat_unknown", now=1000) is None


def test_forged_tampered_expired_or_foreign_cookies_are_refused() -> None:
    signer, _ = sessions()
    cookie = signer.issue(TOKEN, now=1000)
    assert cookie is not None
    payload, signature = cookie.split(".")
    assert signer.role(cookie, now=1061) is None  # expired
    assert signer.role(payload + "." + signature[::-1], now=1001) is None
    assert signer.role(payload[:-2] + "." + signature, now=1001) is None
    assert signer.role("not-a-cookie", now=1001) is None
    assert signer.role(None, now=1001) is None
    other, _ = sessions(b"o" * 32)  # another server's secret key
    assert other.role(cookie, now=1001) is None


def test_the_role_is_the_tokens_current_one() -> None:
    signer, auth = sessions()
    cookie = signer.issue(TOKEN, now=1000)
    auth.add(token_hash(TOKEN), "admin")
    assert signer.role(cookie, now=1001) == "admin"
    del auth.roles[token_hash(TOKEN)]
    assert signer.role(cookie, now=1001) is None
