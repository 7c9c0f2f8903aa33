"""A network cut at the worst moment: a TCP proxy on loopback that forwards a request to the server, waits for
its answer (the server has done the work and committed it), and then drops that answer and the connection.

Only the first request whose request line starts with the armed prefix is cut; everything else passes as
it is, so the client sees exactly what a cut cable or a dead middlebox would leave it: no answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

CHUNK = 65536


class AnswerDroppingProxy:
    """Forwards 127.0.0.1:`port` (a free one unless given) to `upstream_url`; `arm(prefix)` cuts the next
    request starting so."""

    def __init__(self, upstream_url: str, port: int = 0) -> None:
        upstream = urlsplit(upstream_url)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed: bytes | None = None
        self.dropped = threading.Event()  # set once an answer was read from the server and thrown away
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, request_prefix: bytes) -> None:
        with self._lock:
            self._armed = request_prefix
        self.dropped.clear()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            cut = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, cut), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, cut), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, cut: threading.Event) -> None:
        """Client to server. HTTP/1.1 without pipelining: the next bytes back answer this request."""
        while data := _recv(client):
            with self._lock:
                if self._armed is not None and data.startswith(self._armed):
                    self._armed = None
                    cut.set()
            try:
                upstream.sendall(data)
            except OSError:
                break
        _close(client, upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        """Server to client, unless the request was cut: then its answer is read and dropped, and the client's
        connection closed without a byte of it."""
        while data := _recv(upstream):
            if cut.is_set():
                self.dropped.set()
                break
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client, upstream)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(CHUNK)
    except OSError:
        return b""


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
