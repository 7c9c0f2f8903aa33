"""Singleton work runs on exactly one process at a time.

PostgreSQL: a session advisory lock held on a dedicated connection; when its holder dies the database
drops the connection and the lock with it, and another replica takes over on its next try.
SQLite: an exclusive `flock` on a file beside the database, so two processes on one file cannot both lead.
psycopg (10 MB) is imported only on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("rrm.store.leadership")
LEADER_LOCK = 0x72726D03


class Leadership:
    def __init__(self, url: str, sqlite_path: Path | None) -> None:
        self._url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._sqlite_path = sqlite_path
        self._connection: psycopg.Connection | None = None  # PostgreSQL: the leader's, or a standby's
        self._leading = False
        self._fd: int | None = None
        self._lock = threading.RLock()

    def try_acquire(self) -> bool:
        """True while this process leads; cheap to call every second, from any thread: the calls take
        turns, so two loops asking at once can never open two connections and lose the lock with one."""
        with self._lock:
            if self._sqlite_path is not None:
                return self._try_flock()
            return self._try_advisory_lock()

    @property
    def held(self) -> bool:
        """Whether the last `try_acquire` (by the housekeeping loop) left this process leading; no I/O, so
        other singleton work (the provisioning engine) can ask from its own thread without racing it."""
        return self._fd is not None if self._sqlite_path is not None else self._leading

    def _try_flock(self) -> bool:
        if self._fd is not None:
            return True
        assert self._sqlite_path is not None
        fd = os.open(
            self._sqlite_path.with_name(self._sqlite_path.name + ".leader"), os.O_RDWR | os.O_CREAT, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _try_advisory_lock(self) -> bool:
        """A standby keeps its one connection and asks again on it each time, rather than connecting anew."""
        import psycopg

        try:
            if self._connection is None:
                self._connection = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=5, application_name="rrm-leader"
                )
            if self._leading:
                self._connection.execute("SELECT 1")
                return True
            row = self._connection.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
        except psycopg.Error as exc:
            if self._leading:
                log.warning("lost the leader connection; giving up leadership")
            else:
                log.warning("cannot compete for leadership: %s", exc)
            self.release()
            return False
        if row and row[0]:
            self._leading = True
            log.info("this replica now runs the singleton work")
        return self._leading

    def release(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # a connection already broken
                self._connection.close()
            self._connection = None
        self._leading = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
