"""`rrm server` at its open-file limit says so in its log: the event loop closes the connections it cannot
accept without a word, so without this line the operator sees clients cut off and an empty log."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from .harness import ServerProcess, wait_until

pytestmark = pytest.mark.integration

LIMIT = 64  # soft and hard: the server idles at about 25 open files
# `python -m rrm ARGS` with both open-file limits at LIMIT first, so the server cannot raise them.
LIMITED = (
    "import resource, runpy, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT})); "
    "sys.argv[0] = 'rrm'; runpy.run_module('rrm', run_name='__main__', alter_sys=True)"
)


class LimitedServer(ServerProcess):
    def _launch(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        assert args[:3] == [sys.executable, "-m", "rrm"]
        super()._launch([sys.executable, "-c", LIMITED, *args[3:]], env)


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[LimitedServer]:
    server = LimitedServer(tmp_path / "data", tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_server_at_its_open_file_limit_logs_it(limited_server: LimitedServer) -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(LIMIT + 16):  # more than it can accept, each with a request it waits to finish
            connection = socket.create_connection(("127.0.0.1", limited_server.port), timeout=10)
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: rrm\r\n")
            held.append(connection)
        wait_until(
            lambda: f"open-file limit {LIMIT} reached" in limited_server.log_path.read_text(),
            message=lambda: f"no line about the open-file limit in the log:\n{limited_server.tail()}",
        )
    finally:
        for connection in held:
            connection.close()
    assert "ERROR rrm.server.fd_limit" in limited_server.log_path.read_text()
