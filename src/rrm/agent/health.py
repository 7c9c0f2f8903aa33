"""Liveness and readiness endpoints for probes (`GET /livez`, `GET /readyz`), on the agent's own event loop.

Answering at all shows the loop is alive; `/readyz` answers 200 once `ready()` says so (the agent applied a
state, fetched or cached) and 503 before. Deliberately tiny: two paths, one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 5.0
MAX_HEADER_BYTES = 8192


class HealthServer:
    def __init__(self, port: int, ready: Callable[[], bool], host: str = "0.0.0.0") -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("event=health-listening host=%s port=%d", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def answer(self, method: str, path: str) -> tuple[int, str]:
        if method not in ("GET", "HEAD"):
            return 405, "method not allowed"
        if path == "/livez":
            return 200, "ok"
        if path == "/readyz":
            return (200, "ok") if self.ready() else (503, "not ready: no desired state applied yet")
        return 404, "not found"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
            parts = head[:MAX_HEADER_BYTES].split(b"\r\n", 1)[0].decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
            status, body = self.answer(method, path)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
            payload = (body + "\n").encode()
            writer.write(
                f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + (payload if method != "HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
