"""The minimal clients' HTTP/1.1 (`benchmarks.raw_http`) against a scripted asyncio server: framing by
Content-Length and by chunks (RFC 9112 §6.3, §7.1), kept connections reused, and every broken answer a
`ConnectionFailed`."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, whose benchmarks/ this tests
from benchmarks import raw_http

Script = Callable[[bytes], list[bytes] | None]  # request → what to write; None, or a last `CLOSE`: close
CLOSE = b"<close>"


@asynccontextmanager
async def _server(answer: Script) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server that reads each request (head and Content-Length body) and writes what `answer` says;
    yields its port and the requests it read, one entry per connection accepted (requests joined)."""
    connections: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(b"")
        index = len(connections) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                connections[index] += request
                pieces = answer(request)
                if pieces is None:
                    break
                for piece in pieces:
                    if piece is CLOSE:
                        return
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()
        await server.wait_closed()


def _synchronously(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """pytest runs no coroutines here: the test runs on an event loop of its own."""
    return functools.wraps(test)(lambda: asyncio.run(test()))


def _ok(body: bytes, extra: bytes = b"") -> list[bytes]:
    return [b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: "e1"\r\n%s\r\n' % (len(body), extra), body]


@_synchronously
async def test_a_content_length_answer_is_whole_and_the_connection_is_kept_for_the_next_request() -> None:
    async with _server(lambda request: _ok(b"hello")) as (port, connections):
        connection = await raw_http.Connection.open("127.0.0.1", port, 5)
        first = await connection.request("PUT", "/a", {"Authorization": "Bearer t"}, b"{}")
        second = await connection.request("GET", "/b", {})
        connection.close()
    assert (first.status, first.body, first.headers[b"etag"]) == (200, b"hello", b'"e1"')
    assert second.body == b"hello"
    assert len(connections) == 1, "both requests on one connection"
    assert connections[0].startswith(b"PUT /a HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer t\r\n")
    assert b"Content-Length: 2\r\n\r\n{}GET /b HTTP/1.1\r\n" in connections[0]


@_synchronously
async def test_a_chunked_body_goes_to_on_body_as_it_arrives_without_its_framing() -> None:
    pieces = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nfirst\r\n",
        b"6;ext=1\r\nsecond\r\n",
        b"0\r\n\r\n",
    ]
    received: list[bytes] = []
    async with _server(lambda request: pieces) as (port, _):
        connection = await raw_http.Connection.open("127.0.0.1", port, 5)
        answer = await connection.request("GET", "/stream", {}, on_body=received.append)
        connection.close()
    assert answer.status == 200 and answer.body == b""
    assert b"".join(received) == b"firstsecond"


@_synchronously
async def test_the_pool_reuses_a_kept_connection_and_replaces_one_the_server_closed() -> None:
    answers = iter([_ok(b"1"), _ok(b"2", b"Connection: close\r\n"), _ok(b"3")])
    async with _server(lambda request: next(answers)) as (port, connections):
        pool = raw_http.Pool("127.0.0.1", port, 2, 5)
        bodies = [(await pool.request("PUT", "/s", {}, b"x")).body for _ in range(3)]
        pool.close()
    assert bodies == [b"1", b"2", b"3"]
    assert [c.count(b"PUT /s") for c in connections] == [2, 1], "a new connection after `Connection: close`"


@_synchronously
async def test_a_connection_closed_before_the_answer_is_whole_fails_the_request() -> None:
    partial = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", CLOSE]
    async with _server(lambda request: partial) as (port, _):
        connection = await raw_http.Connection.open("127.0.0.1", port, 5)
        with pytest.raises(raw_http.ConnectionFailed, match="connection closed"):
            await asyncio.wait_for(connection.request("GET", "/", {}), 5)


@_synchronously
async def test_an_answer_that_is_not_http_fails_the_request_and_closes_the_connection() -> None:
    async with _server(lambda request: [b"SSH-2.0-OpenSSH\r\n\r\n"]) as (port, _):
        connection = await raw_http.Connection.open("127.0.0.1", port, 5)
        with pytest.raises(raw_http.ConnectionFailed, match=r"not an HTTP/1\.1 answer"):
            await asyncio.wait_for(connection.request("GET", "/", {}), 5)
    assert connection.closed
    with pytest.raises(raw_http.ConnectionFailed, match="closed"):
        await connection.request("GET", "/", {})


@_synchronously
async def test_a_server_that_closes_without_answering_fails_the_request() -> None:
    async with _server(lambda request: None) as (port, _):
        connection = await raw_http.Connection.open("127.0.0.1", port, 5)
        with pytest.raises(raw_http.ConnectionFailed, match="connection closed"):
            await asyncio.wait_for(connection.request("GET", "/", {}), 5)
