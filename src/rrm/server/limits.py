"""Request body limits, enforced in front of every endpoint (the agent fast path included): a body larger
than its endpoint's limit is answered 413 before more than the limit is read. A declared `Content-Length`
over the limit is refused without reading any of it; a chunked body is read only up to the limit. On an
Open Service Broker's paths the refusal has the OSB error shape (`{"description": ...}`), elsewhere the API's
(`{"detail": ...}`).

docs/api.md ("Limits") names each limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

KIB = 1024
MIB = 1024 * KIB
# a status report of 1,000 components, each failed with a full-length message, listed by the sidecar and
# drifted in 20 fields, is 2.0 MB as the agent encodes it (UTF-8, no escapes) when its text is ASCII, 3.0 MB
# in two-byte characters and 4.06 MB in three-byte ones (tests/unit/test_limits.py): 4 MiB holds them all
STATUS_BODY_LIMIT = 4 * MIB
AGENT_BODY_LIMIT = 8 * KIB  # pairing and rotation: a token, a PEM public key, a signature, a version
BROKER_BODY_LIMIT = 64 * KIB  # an OSB provision, update or bind request with its parameters and context
DEFAULT_BODY_LIMIT = 64 * KIB  # every other request: labels, names, selectors, a dashboard form


@dataclass(frozen=True)
class BodyLimits:
    """The limit of each path: an exact path first, then the longest matching prefix, else `default`;
    `brokers`: the path prefixes an Open Service Broker serves."""

    default: int
    paths: dict[str, int]
    prefixes: dict[str, int]
    brokers: tuple[str, ...] = ()

    def of(self, path: str) -> int:
        if path in self.paths:
            return self.paths[path]
        matching = [prefix for prefix in self.prefixes if path.startswith(prefix)]
        return self.prefixes[max(matching, key=len)] if matching else self.default

    def is_broker(self, path: str) -> bool:
        return path.startswith(self.brokers)


def control_plane_limits(apply_limit: int, *broker_paths: str) -> BodyLimits:
    """`broker_paths`: the broker URL of each Open Service Broker the control plane serves."""
    brokers = tuple(f"{path}/" for path in broker_paths)
    return BodyLimits(
        default=DEFAULT_BODY_LIMIT,
        paths={"/agent/v1/status": STATUS_BODY_LIMIT, "/api/v1/apply": apply_limit},
        prefixes={"/agent/v1/": AGENT_BODY_LIMIT, **dict.fromkeys(brokers, BROKER_BODY_LIMIT)},
        brokers=brokers,
    )


def static_broker_limits() -> BodyLimits:
    return BodyLimits(default=BROKER_BODY_LIMIT, paths={}, prefixes={}, brokers=("/",))


class BodyLimitGuard:
    """ASGI middleware answering 413 (and closing the connection) to a body over its path's limit."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.of(scope["path"])
        declared, chunked = _body_headers(scope["headers"])
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, send, limit)
        elif declared is not None or not chunked:
            await self.app(scope, receive, send)  # uvicorn delivers no more than Content-Length
        else:
            await self._chunked(scope, receive, send, limit)

    async def _too_large(self, scope: Scope, send: Send, limit: int) -> None:
        message = f"the request body is larger than this endpoint's limit of {limit} bytes"
        key = "description" if self.limits.is_broker(scope["path"]) else "detail"
        await _answer_413(send, json.dumps({key: message}).encode())

    async def _chunked(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Read a body of unknown length up to the limit, then hand it to the app in one message."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(b"".join(chunks), receive), send)


def _body_headers(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bool]:
    """Content-Length (None without one), and whether a Transfer-Encoding is given: read here rather than
    from a dict of the headers in `BodyLimitGuard.__call__`, whose frame lives as long as the request (a
    watch stream's, for hours) and would keep that dict."""
    declared, chunked = None, False
    for name, value in headers:
        if name == b"content-length":
            declared = value
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body (a `BodyLimitGuard` in front bounds it); None when the client went away."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """`receive`, with the body already read given again first."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()  # a disconnect, for endpoints that wait for one
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _answer_413(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
