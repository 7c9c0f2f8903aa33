"""Cross-site request forgery: a state-changing dashboard request must come from the dashboard's own pages.

SameSite=Strict keeps the session cookie off cross-site requests, but not off a cross-site sign-in, which
would set a cookie for the attacker's token (login CSRF). The browser says where a request comes from:
`Sec-Fetch-Site` (every current browser; it holds behind a proxy that rewrites `Host`), else `Origin`
compared with `Host`. A request with neither is no browser's form post or fetch (curl, scripts) and passes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import HTTPException, Request

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})  # "none": the user's own action (address bar)


def cross_site(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in SAME_ORIGIN_SITES
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()


async def refuse_cross_site(request: Request) -> None:
    """The dependency on every dashboard route; reads pass, writes from another site get a 403."""
    if request.method not in SAFE_METHODS and cross_site(request):
        raise HTTPException(403, "cross-site request refused: use the dashboard's own pages")
