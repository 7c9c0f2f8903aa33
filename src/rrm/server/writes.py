"""Group commit for admin writes: the writes that arrive while one transaction commits go together into the
next one, each in its own savepoint (a refused write leaves the others), with one commit (one fsync, one
turn of the write lock) and one catch-up of the fleet for all of them. Each caller is answered only after
the commit that holds its write, so nothing acknowledged can be lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from rrm.server.fleet import Fleet
from rrm.store import Database

T = TypeVar("T")
Work = Callable[[Session], Any]


class Discard(Exception):
    """Raised by a write to roll its own changes back and still answer with `value` (a dry run)."""

    def __init__(self, value: Any) -> None:
        super().__init__("discarded")
        self.value = value


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None


class WriteBatcher:
    def __init__(self, db: Database, fleet: Fleet) -> None:
        self._db = db
        self._fleet = fleet
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, work: Callable[[Session], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    outcomes = await asyncio.to_thread(self._commit, [work for work, _ in batch])
                except Exception as exc:  # the commit failed: none of them is stored
                    outcomes = [_Outcome(error=exc)] * len(batch)
                else:
                    await self._fleet.catch_up()
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if outcome.error is not None:
                        future.set_exception(outcome.error)
                    else:
                        future.set_result(outcome.value)
        finally:
            self._drainer = None

    def _commit(self, works: list[Work]) -> list[_Outcome]:
        outcomes = []
        with self._db.write() as session:
            for work in works:
                savepoint = session.begin_nested()
                try:
                    outcome = _Outcome(value=work(session))
                except Discard as discarded:
                    savepoint.rollback()
                    outcome = _Outcome(value=discarded.value)
                except Exception as exc:
                    savepoint.rollback()
                    outcome = _Outcome(error=exc)
                else:
                    savepoint.commit()
                outcomes.append(outcome)
        return outcomes
