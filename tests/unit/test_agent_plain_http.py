"""The agent's plain-HTTP transport: answers framed as RFC 9112 §6.3 says, kept connections reused only when
both sides allow it and the body was read to its end, failures as httpx's exceptions, and only where no TLS
can be spoken."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrm.agent.client import DirectorClient
from rrm.agent.plain_http import PlainHTTPTransport

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


def fixed(data: bytes) -> Answer:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(data)

    return answer


@dataclass
class Served:
    """What the server saw: the requests of each connection, and which connections it has closed."""

    requests: list[list[bytes]] = field(default_factory=list)
    closed: list[asyncio.Event] = field(default_factory=list)

    def per_connection(self) -> list[int]:
        return [len(requests) for requests in self.requests]


@asynccontextmanager
async def http_server(
    answer: Answer = fixed(OK), close_after_answer: bool = False
) -> AsyncIterator[tuple[str, Served]]:
    """A server that reads each request (head and `Content-Length` body) and answers it with `answer`."""
    served = Served()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests: list[bytes] = []
        served.requests.append(requests)
        closed = asyncio.Event()
        served.closed.append(closed)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                requests.append(head + await reader.readexactly(length))
                await answer(requests[-1], writer)
                await writer.drain()
                if close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            await writer.wait_closed()
            closed.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", served
    finally:
        server.close()


def client(keepalive_expiry: float = 10.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=PlainHTTPTransport(keepalive_expiry))


def test_requests_are_answered_and_a_kept_connection_is_reused() -> None:
    async def run() -> list[int]:
        async with http_server() as (url, served), client() as http:
            for _ in range(3):
                answer = await http.get(url + "/x?wait=1")
                assert (answer.status_code, answer.content) == (200, b"ok")
            assert served.requests[0][0].startswith(b"GET /x?wait=1 HTTP/1.1\r\nHost: 127.0.0.1:")
            return served.per_connection()

    assert asyncio.run(run()) == [3]


def test_a_body_is_sent_with_its_length() -> None:
    async def run() -> bytes:
        async with http_server() as (url, served), client() as http:
            await http.put(url + "/agent/v1/status", content=b'{"a": 1}', headers={"X-Mine": "yes"})
            return served.requests[0][0]

    request = asyncio.run(run())
    assert request.startswith(b"PUT /agent/v1/status HTTP/1.1\r\n")
    assert b"\r\nContent-Length: 8\r\n" in request and b"\r\nX-Mine: yes\r\n" in request
    assert request.endswith(b'\r\n\r\n{"a": 1}')


def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def run() -> list[int]:
        async with http_server(close_after_answer=True) as (url, served), client() as http:
            for index in range(3):
                assert (await http.get(url)).status_code == 200
                await asyncio.wait_for(served.closed[index].wait(), 5)
            return served.per_connection()

    assert asyncio.run(run()) == [1, 1, 1]


@pytest.mark.parametrize(
    ("answer", "request_headers"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", {}),
        (OK, {"Connection": "close"}),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ],
    ids=["the-answer-says-close", "the-request-says-close", "http-1.0"],
)
def test_a_connection_either_side_wants_closed_is_not_kept(
    answer: bytes, request_headers: dict[str, str]
) -> None:
    async def run() -> list[int]:
        async with http_server(fixed(answer)) as (url, served), client() as http:
            for _ in range(2):
                assert (await http.get(url, headers=request_headers)).content == b"ok"
            return served.per_connection()

    assert asyncio.run(run()) == [1, 1]


def test_an_idle_connection_past_its_expiry_is_not_reused() -> None:
    async def run() -> list[int]:
        async with http_server() as (url, served), client(keepalive_expiry=0.0) as http:
            for _ in range(2):
                await http.get(url)
            return served.per_connection()

    assert asyncio.run(run()) == [1, 1]


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", b"hello"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2;x=y\r\nhe\r\n3\r\nllo\r\n0\r\nT: 1\r\n\r\n",
            b"hello",
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n', b""),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    ],
    ids=["content-length", "chunked-with-extension-and-trailer", "204", "304", "after-100-continue"],
)
def test_answers_are_framed_as_rfc_9112_says(answer: bytes, body: bytes) -> None:
    """RFC 9112 §6.3: 204 and 304 have no body; 1xx answers are interim; each leaves the connection to
    be kept."""

    async def run() -> list[int]:
        async with http_server(fixed(answer)) as (url, served), client() as http:
            for _ in range(2):
                assert (await http.get(url)).content == body
            return served.per_connection()

    assert asyncio.run(run()) == [2]


def test_an_answer_without_length_ends_with_its_connection() -> None:
    async def run() -> tuple[bytes, list[int]]:
        async with (
            http_server(fixed(b"HTTP/1.1 200 OK\r\n\r\nall of it"), close_after_answer=True) as (
                url,
                served,
            ),
            client() as http,
        ):
            content = (await http.get(url)).content
            await http.get(url)
            return content, served.per_connection()

    assert asyncio.run(run()) == (b"all of it", [1, 1])


def test_a_chunked_stream_is_handed_on_chunk_by_chunk_as_it_arrives() -> None:
    """A watch stream's frames come one chunk each, minutes apart: none may wait for the next."""

    async def run() -> list[bytes]:
        second = asyncio.Event()

        async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await second.wait()
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

        pieces = []
        async with (
            http_server(answer) as (url, _),
            client() as http,
            http.stream("GET", url) as response,
        ):
            async for piece in response.aiter_raw():
                pieces.append(piece)
                second.set()
        return pieces

    assert asyncio.run(run()) == [b"first", b"second"]


def test_a_connection_whose_answer_was_not_read_to_its_end_is_closed() -> None:
    async def run() -> list[int]:
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        async with http_server(fixed(answer)) as (url, served), client() as http:
            async with http.stream("GET", url) as response:
                assert await anext(response.aiter_raw()) == b"first"
            await asyncio.wait_for(served.closed[0].wait(), 5)
            return served.per_connection()

    assert asyncio.run(run()) == [1]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"", "Server disconnected without sending a response."),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "with 5 bytes unsent"),
        (b"SMTP ready\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "a malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "a malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "a malformed chunk size"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
            "does not end where its size says",
        ),
    ],
    ids=["nothing", "short-body", "not-http", "bad-header", "bad-length", "bad-chunk-size", "chunk-too-long"],
)
def test_a_broken_answer_is_a_remote_protocol_error(answer: bytes, expected: str) -> None:
    async def run() -> None:
        async with http_server(fixed(answer), close_after_answer=True) as (url, _), client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match=expected):
                await http.get(url)

    asyncio.run(run())


def test_failures_are_httpx_exceptions() -> None:
    async def silent_at_first(request: bytes, writer: asyncio.StreamWriter) -> None:
        if b"/silent" in request:
            await asyncio.sleep(30)
        writer.write(OK)

    async def run() -> list[int]:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{unused.getsockname()[1]}"
            async with client() as http:
                with pytest.raises(httpx.ConnectError):
                    await http.get(refused)
                with pytest.raises(httpx.UnsupportedProtocol):
                    await http.get("https://127.0.0.1:1")
        async with http_server(silent_at_first) as (url, served), client() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(url + "/silent", timeout=httpx.Timeout(0.2))
            assert (await http.get(url)).content == b"ok"  # on a new connection: the late answer is not read
            return served.per_connection()

    assert asyncio.run(run()) == [1, 1]


@settings(max_examples=40, deadline=None)
@given(
    body=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=3000), max_size=6),
)
def test_a_chunked_body_comes_out_as_it_went_in(body: bytes, cuts: list[int]) -> None:
    edges = sorted({0, len(body), *(cut for cut in cuts if cut < len(body))})
    chunks = [body[start:end] for start, end in itertools.pairwise(edges)]
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks)
        + b"0\r\n\r\n"
    )

    async def run() -> tuple[bytes, list[int]]:
        async with http_server(fixed(answer)) as (url, served), client() as http:
            content = (await http.get(url)).content
            await http.get(url)
            return content, served.per_connection()

    assert asyncio.run(run()) == (body, [2])


def test_only_plain_http_directors_without_a_proxy_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def transport(urls: list[str]) -> object:
        return DirectorClient(urls)._http._transport  # type: ignore[attr-defined]

    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(transport(["http://127.0.0.1:1"]), PlainHTTPTransport)
    assert not isinstance(transport(["http://127.0.0.1:1", "https://director.example"]), PlainHTTPTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert not isinstance(transport(["http://127.0.0.1:1"]), PlainHTTPTransport)
