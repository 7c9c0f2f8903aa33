"""Wake-ups between the worker processes of one `rrm server --workers N` on SQLite, where there is no
LISTEN/NOTIFY: each worker binds a UNIX datagram socket, and a worker that committed a change sends one byte
to every other, whose feed follower then catches up at once instead of at its next poll (the poll stays,
so a lost byte costs at most `feed_poll_seconds`).

The sockets are in Linux's abstract namespace, named by the database file and the worker's slot
(0..N-1): no files to clean up after a kill -9, no path-length limit, and a replacement worker takes its
slot's name again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("rrm.server.wakeups")


def wakeup_address(database: Path, slot: int) -> bytes:
    """The abstract socket name of worker `slot` of the server on `database`."""
    group = hashlib.sha256(str(database.resolve()).encode()).hexdigest()[:16]
    return f"\0rrm-{group}-{slot}".encode()


class WorkerWakeups:
    """This worker's wake-up socket, and the sending side towards its `count - 1` siblings."""

    def __init__(self, database: Path, slot: int, count: int) -> None:
        self._peers = [wakeup_address(database, other) for other in range(count) if other != slot]
        self._inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._inbox.setblocking(False)
        self._inbox.bind(wakeup_address(database, slot))
        self._outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._outbox.setblocking(False)

    def listen(self, loop: asyncio.AbstractEventLoop, on_wake: Callable[[], None]) -> None:
        """Call `on_wake` on `loop` whenever a sibling committed a change (several bytes, one call)."""

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                while self._inbox.recv(64):
                    pass
            on_wake()

        loop.add_reader(self._inbox.fileno(), drain)

    def tell_siblings(self) -> None:
        """One byte to each sibling; one that is not running (being replaced) or whose queue is full
        (it has a wake-up pending already) is skipped. Safe from any thread."""
        for peer in self._peers:
            with contextlib.suppress(ConnectionRefusedError, FileNotFoundError, BlockingIOError):
                self._outbox.sendto(b"\1", peer)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self._inbox.fileno())
        self._inbox.close()
        self._outbox.close()
