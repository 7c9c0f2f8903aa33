"""A loopback HTTP proxy that buffers every response until it ends, as some proxies with response
buffering on do: a long-poll passes through whole, a watch stream never shows its first frame.

One request per connection: the request goes upstream with `Connection: close`, the whole response is read
until the upstream closes, then written to the client, and the connection closed."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class BufferingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.requests: list[str] = []  # request lines, in arrival order
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.requests.append(lines[0])
            length = next(
                (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")),
                0,
            )
            body = await reader.readexactly(length)
            kept = [line for line in lines[1:] if line and not line.lower().startswith("connection:")]
            upstream_head = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(upstream_head + body)
            await up_writer.drain()
            response = await up_reader.read()  # buffered until the upstream ends it
            up_writer.close()
            writer.write(response)
            await writer.drain()
        writer.close()
