"""Group commit for the engine's threads: the writes that arrive while one transaction commits go together
into the next one, each in its own savepoint (a write that fails leaves the others), with one commit (one
fsync, one turn of the write lock). Each caller gets its answer only after the commit that holds its
write, so what an attempt records is stored before the attempt goes on, as with a transaction of its own.

The engine runs up to `concurrency` attempts at once and records each; on SQLite every transaction waits
for the single writer, so one commit per record made the writer the limit of how fast operations advance.
Threads only: the first writer to find no commit under way commits for everyone waiting (no event loop,
nothing to hang when the server stops).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from rrm.store import Database

T = TypeVar("T")


@dataclass
class _Write:
    work: Callable[[Session], Any]
    value: Any = None
    error: BaseException | None = None
    done: bool = False


class GroupCommit:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._turn = threading.Condition()
        self._queue: list[_Write] = []
        self._committing = False

    def write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a savepoint of the next transaction; its value once that transaction committed."""
        mine = _Write(work)
        with self._turn:
            self._queue.append(mine)
            while self._committing and not mine.done:
                self._turn.wait()
            if not mine.done:
                self._committing = True
                batch, self._queue = self._queue, []
        if not mine.done:
            try:
                self._commit(batch)
            finally:
                with self._turn:
                    self._committing = False
                    self._turn.notify_all()
        if mine.error is not None:
            raise mine.error
        value: T = mine.value
        return value

    def _commit(self, batch: list[_Write]) -> None:
        try:
            with self._db.write() as session:
                for write in batch:
                    savepoint = session.begin_nested()
                    try:
                        write.value = write.work(session)
                    except Exception as exc:
                        savepoint.rollback()
                        write.error = exc
                    else:
                        savepoint.commit()
        except Exception as exc:  # the commit failed: none of them is stored
            for write in batch:
                write.error = write.error or exc
        finally:
            for write in batch:
                write.done = True
