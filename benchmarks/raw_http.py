"""HTTP/1.1 for the minimal-protocol clients on asyncio protocols and httptools' C parser: the least CPU a
client can spend per request and per streamed frame in Python, so that the load generator, which shares the
machine with the server it measures, takes as little of it as it can.

One `Connection` carries one request at a time and is kept for the next when the answer allows it; an
answer's body is handed on piece by piece as it arrives (a stream's frames) or gathered (a short answer).
`Pool` keeps connections to one server for requests that need no connection of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools


class ConnectionFailed(ConnectionError):
    """The connection closed or broke before the answer was whole, or the answer was not HTTP."""


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]  # names lower-case; of a repeated header, the last
    body: bytes  # empty when the body went to `on_body`


@dataclass
class _Exchange:
    done: asyncio.Future[Answer]
    on_body: Callable[[bytes], None] | None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, made by `open`; `request` sends one request and waits for its answer."""

    def __init__(self, host: str) -> None:
        self._host = host.encode()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: _Exchange | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, connection = await loop.create_connection(lambda: cls(host), host, port)
        return connection

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes = b"",
        on_body: Callable[[bytes], None] | None = None,
    ) -> Answer:
        """The answer once it is whole; with `on_body`, each piece of its body goes there instead."""
        if self.closed or self._transport is None:
            raise ConnectionFailed("the connection is closed")
        assert self._exchange is None, "one request at a time"
        lines = [f"{method} {path} HTTP/1.1\r\n".encode(), b"Host: ", self._host, b"\r\n"]
        lines += [f"{name}: {value}\r\n".encode() for name, value in headers.items()]
        if body or method in ("POST", "PUT"):
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines += [b"\r\n", body]
        exchange = _Exchange(asyncio.get_running_loop().create_future(), on_body)
        self._exchange = exchange
        self._transport.write(b"".join(lines))
        try:
            return await exchange.done
        finally:
            self._exchange = None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport instances

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionFailed(f"not an HTTP/1.1 answer: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; `connection_lost` fails what is still waiting

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionFailed(f"connection closed: {exc or 'by the server'}"))

    def _fail(self, exc: Exception) -> None:
        if self._exchange is not None and not self._exchange.done.done():
            self._exchange.done.set_exception(exc)

    # httptools' callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._exchange is not None:
            self._exchange.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        if exchange.on_body is not None:
            exchange.on_body(body)
        else:
            exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange = self._exchange
        if not self._parser.should_keep_alive():
            self.close()
        if exchange is not None and not exchange.done.done():
            answer = Answer(self._parser.get_status_code(), exchange.headers, b"".join(exchange.chunks))
            exchange.done.set_result(answer)


class Pool:
    """Kept connections to one server, at most `size`, each lent to one request at a time."""

    def __init__(self, host: str, port: int, size: int, connect_timeout: float) -> None:
        self.host, self.port, self.connect_timeout = host, port, connect_timeout
        self._idle: list[Connection] = []
        self._free = asyncio.Semaphore(size)

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Answer:
        async with self._free:
            connection = None
            while self._idle and (connection is None or connection.closed):
                connection = self._idle.pop()
            if connection is None or connection.closed:
                connection = await Connection.open(self.host, self.port, self.connect_timeout)
            try:
                answer = await connection.request(method, path, headers, body)
            except BaseException:
                connection.close()
                raise
            if not connection.closed:
                self._idle.append(connection)
            return answer

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
