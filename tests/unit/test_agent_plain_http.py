"""The agent's plain-HTTP transport: httpx's behaviour (answers, kept connections, errors as httpx's
exceptions) on httpcore's network layer over asyncio streams, and only where no TLS can be spoken."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from rrm.agent.client import DirectorClient, tls_verification
from rrm.agent.plain_http import AsyncioBackend, plain_http_transport

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@asynccontextmanager
async def http_server(
    close_after_answer: bool = False, answer: bool = True
) -> AsyncIterator[tuple[str, list[int]]]:
    """A server answering every request with 200 "ok"; yields its URL and, per connection, the requests
    it served."""
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(0)
        index = len(served) - 1
        try:
            while (await reader.readuntil(b"\r\n\r\n")) and answer:
                served[index] += 1
                writer.write(ANSWER)
                await writer.drain()
                if close_after_answer:
                    break
            if not answer:
                await asyncio.sleep(30)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", served
    finally:
        server.close()


def client() -> httpx.AsyncClient:
    context = tls_verification(["http://127.0.0.1"])
    assert not isinstance(context, bool)
    return httpx.AsyncClient(transport=plain_http_transport(context, httpx.Limits(keepalive_expiry=10)))


def test_httpx_still_keeps_its_connection_pool_where_it_is_replaced() -> None:
    """plain_http_transport replaces httpx's private `_pool`: an httpx that names it otherwise fails here."""
    transport = plain_http_transport(tls_verification(["http://x"]), httpx.Limits())  # type: ignore[arg-type]
    assert isinstance(transport._pool._network_backend, AsyncioBackend)  # type: ignore[attr-defined]
    assert "_pool" in vars(httpx.AsyncHTTPTransport())


def test_only_plain_http_directors_without_a_proxy_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def backend(urls: list[str]) -> object:
        pool = DirectorClient(urls)._http._transport._pool  # type: ignore[attr-defined]
        return pool._network_backend

    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(backend(["http://127.0.0.1:1"]), AsyncioBackend)
    assert not isinstance(backend(["http://127.0.0.1:1", "https://director.example"]), AsyncioBackend)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert not isinstance(backend(["http://127.0.0.1:1"]), AsyncioBackend)


def test_requests_are_answered_and_a_kept_connection_is_reused() -> None:
    async def run() -> list[int]:
        async with http_server() as (url, served), client() as http:
            for _ in range(3):
                answer = await http.get(url + "/x")
                assert (answer.status_code, answer.content) == (200, b"ok")
            return served

    assert asyncio.run(run()) == [3]


def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def run() -> list[int]:
        async with http_server(close_after_answer=True) as (url, served), client() as http:
            for _ in range(3):
                assert (await http.get(url)).status_code == 200
                await asyncio.sleep(0.05)  # the server's close reaches this side
            return served

    assert asyncio.run(run()) == [1, 1, 1]


def test_failures_are_httpx_exceptions() -> None:
    async def run() -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{unused.getsockname()[1]}"
            async with client() as http:
                with pytest.raises(httpx.ConnectError):
                    await http.get(refused)
        async with http_server(answer=False) as (url, _), client() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(url, timeout=httpx.Timeout(0.2))

    asyncio.run(run())
