"""The agent's transport to plain-HTTP directors: HTTP/1.1 spoken directly on asyncio streams.

httpx's own transport (httpcore and h11, with anyio beneath) cost 500-800 µs of CPU per request on a kept
connection on loopback, for the framing of a few hundred bytes; this one costs about a tenth of that. An
agent pays it for every status report and long-poll, and for every read of its watch stream, so it is a
large share of an agent's CPU per update, and of a fleet's. httpx's client stays above it (the agent's
calls, timeouts, exceptions and response handling are httpx's), so only the framing is ours: a request
with its body and a `Content-Length`, and the answer framed by RFC 9112 §6.3. TLS and proxies keep httpx's
own transport (`rrm.agent.client.tls_verification` decides): this one refuses any URL but `http:`.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

HEAD_LIMIT = 64 * 1024  # status line and headers of one answer, as h11's default
READ_SIZE = 64 * 1024
NO_BODY_STATUSES = frozenset({204, 304})


class _Connection:
    """One TCP connection; `idle_since` is set while it waits in the pool."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        """Whether a pooled connection can carry another request: not expired, and the server has neither
        closed it nor written anything unasked on it."""
        if now - self.idle_since > expiry or self.reader.at_eof() or self.writer.is_closing():
            return False
        return not _readable(self.writer.get_extra_info("socket"))

    def close(self) -> None:
        self.writer.close()


class PlainHTTPTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over TCP with kept-alive connections (dropped after `keepalive_expiry` s idle); failures
    are httpx's exceptions, as from httpx's own transport. No connection limit: an agent has at most a few
    requests under way."""

    def __init__(self, keepalive_expiry: float | None = 5.0) -> None:
        self._expiry = float("inf") if keepalive_expiry is None else keepalive_expiry
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"this transport speaks plain HTTP only, not {url.scheme!r}")
        origin = (url.host, url.port or 80)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        head = _request_head(request, body)
        connection = self._pooled(origin)
        if connection is None:
            connection = await _connect(origin, timeouts.get("connect"))
        try:
            await _write(connection, head + body, timeouts.get("write"))
            return await self._answer(request, origin, connection, timeouts.get("read"))
        except BaseException:
            connection.close()
            raise

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _pooled(self, origin: tuple[str, int]) -> _Connection | None:
        connections = self._idle.get(origin)
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            if connection.usable(now, self._expiry):
                return connection
            connection.close()
        return None

    def _release(self, origin: tuple[str, int], connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.setdefault(origin, []).append(connection)

    async def _answer(
        self,
        request: httpx.Request,
        origin: tuple[str, int],
        connection: _Connection,
        read_timeout: float | None,
    ) -> httpx.Response:
        """The answer's head, with its body as a stream that hands the connection back when read to its end
        (and both sides allow keeping it), or closes it."""
        reader = connection.reader
        while True:
            version, status, reason, headers = _parse_head(
                await _timed(reader.readuntil(b"\r\n\r\n"), read_timeout)
            )
            if status >= 200:
                break  # 1xx: interim answers (100 Continue, 103 Early Hints) precede the final one
        fields = {name.lower(): value for name, value in headers}
        if request.method == "HEAD" or status in NO_BODY_STATUSES:
            body: AsyncIterator[bytes] = _nothing()
            delimited = True
        elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            body, delimited = _chunked(reader, read_timeout), True
        elif b"content-length" in fields:
            body, delimited = _sized(reader, _content_length(fields[b"content-length"]), read_timeout), True
        else:
            body, delimited = _until_closed(reader, read_timeout), False
        reusable = (
            delimited
            and version == b"HTTP/1.1"
            and b"close" not in fields.get(b"connection", b"").lower()
            and b"close" not in request.headers.get("connection", "").lower().encode()
        )
        release = (lambda: self._release(origin, connection)) if reusable else connection.close
        return httpx.Response(
            status,
            headers=headers,
            stream=_ResponseStream(body, connection, release),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )


class _ResponseStream(httpx.AsyncByteStream):
    """The answer's body; its connection goes back to the pool (`release`) only when the body was read to
    its end, and is closed otherwise."""

    def __init__(
        self, body: AsyncIterator[bytes], connection: _Connection, release: Callable[[], None]
    ) -> None:
        self._body, self._connection, self._release = body, connection, release
        self._read_to_end = self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._body:
                yield piece
        except BaseException:
            self._connection.close()
            raise
        self._read_to_end = True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._read_to_end:
            self._release()
        else:
            self._connection.close()


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    """The request line and headers; the body goes with a `Content-Length` (never chunked)."""
    target = request.url.raw_path
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        if name.lower() not in (b"content-length", b"transfer-encoding"):
            lines.append(name + b": " + value)
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _connect(origin: tuple[str, int], timeout: float | None) -> _Connection:
    """A new connection (asyncio's streams set TCP_NODELAY)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(*origin, limit=HEAD_LIMIT)
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(f"no connection to {origin[0]}:{origin[1]} within {timeout} s") from exc
    except OSError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    return _Connection(reader, writer)


async def _write(connection: _Connection, data: bytes, timeout: float | None) -> None:
    try:
        connection.writer.write(data)
        if connection.writer.transport.get_write_buffer_size():
            async with asyncio.timeout(timeout):
                await connection.writer.drain()
    except TimeoutError as exc:
        raise httpx.WriteTimeout(f"the request was not written within {timeout} s") from exc
    except OSError as exc:
        raise httpx.WriteError(str(exc)) from exc


def _parse_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """Version, status, reason and headers of `HTTP/1.x <status> <reason>` and its `name: value` lines."""
    status_line, *lines = head[:-4].split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"a malformed header line: {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return version, int(code), reason, headers


def _content_length(value: bytes) -> int:
    if not value.isdigit():
        raise httpx.RemoteProtocolError(f"a malformed Content-Length: {value[:20]!r}")
    return int(value)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


async def _sized(reader: asyncio.StreamReader, length: int, timeout: float | None) -> AsyncIterator[bytes]:
    while length:
        piece = await _read(reader, min(length, READ_SIZE), timeout)
        if not piece:
            raise httpx.RemoteProtocolError(f"the server closed the connection with {length} bytes unsent")
        length -= len(piece)
        yield piece


async def _chunked(reader: asyncio.StreamReader, timeout: float | None) -> AsyncIterator[bytes]:
    """The chunks' data as each arrives (a watch stream's frames come one chunk each), then the trailers."""
    while True:
        size_line = await _read_line(reader, timeout)
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError(f"a malformed chunk size: {size_line[:20]!r}") from None
        if size == 0:
            while await _read_line(reader, timeout):
                pass  # trailer fields, unused
            return
        data = await _read_exactly(reader, size + 2, timeout)
        if data[-2:] != b"\r\n":
            raise httpx.RemoteProtocolError("a chunk does not end where its size says")
        yield data[:-2]


async def _until_closed(reader: asyncio.StreamReader, timeout: float | None) -> AsyncIterator[bytes]:
    while piece := await _read(reader, READ_SIZE, timeout):
        yield piece


async def _read(reader: asyncio.StreamReader, size: int, timeout: float | None) -> bytes:
    return await _timed(reader.read(size), timeout)


async def _read_line(reader: asyncio.StreamReader, timeout: float | None) -> bytes:
    """One CRLF-terminated line, without its CRLF."""
    return (await _timed(reader.readuntil(b"\r\n"), timeout))[:-2]


async def _read_exactly(reader: asyncio.StreamReader, size: int, timeout: float | None) -> bytes:
    return await _timed(reader.readexactly(size), timeout)


async def _timed(read: Awaitable[bytes], timeout: float | None) -> bytes:
    """`read` within `timeout` s, its failures as httpx's exceptions."""
    try:
        async with asyncio.timeout(timeout):
            return await read
    except TimeoutError as exc:
        raise httpx.ReadTimeout(f"nothing read within {timeout} s") from exc
    except asyncio.IncompleteReadError as exc:
        raise httpx.RemoteProtocolError(
            "the server broke off its answer"
            if exc.partial
            else "Server disconnected without sending a response."
        ) from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError(f"a line of the answer is longer than {HEAD_LIMIT} bytes") from exc
    except OSError as exc:
        raise httpx.ReadError(str(exc)) from exc


def _readable(sock: Any) -> bool:
    """Whether the socket has something to read (or is gone); poll, not select, which fails above fd 1023."""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))
