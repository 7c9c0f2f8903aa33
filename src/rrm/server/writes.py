"""Group commit for admin writes: the writes that arrive while one transaction commits go together into the
next one, each in its own savepoint (a refused write leaves the others), with one commit (one fsync, one
turn of the write lock) and one catch-up of the fleet for all of them. Each caller is answered only after
the commit that holds its write, so nothing acknowledged can be lost.

Between transactions the batcher gives the writers of the last ones a moment (`gather_seconds`) to send
their next write, so that concurrent writers keep sharing transactions instead of the first to come back
taking a commit and a catch-up for itself alone; a lone writer, or a batch as large as the recent ones,
does not wait. The recent batch sizes outlive a drainer that stopped for want of writes (the writers were
slower to come back than the gather time) unless nothing came for `FORGET_SECONDS`: forgotten at each stop,
the next write went alone into a transaction, the others into the next one, and eight concurrent writers
settled on a mean of two writes per transaction."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from rrm.server.fleet import Fleet
from rrm.store import Database

T = TypeVar("T")
Work = Callable[[Session], Any]
GATHER_SECONDS = 0.005  # about one commit's fsync on a local disk: a writer back within it shares the next
RECENT_BATCHES = 8  # how far back the batch size to wait for is remembered
FORGET_SECONDS = 0.25  # a pause in writes this long forgets the recent batch sizes (a lone writer: no wait)


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
    def __init__(self, db: Database, fleet: Fleet, gather_seconds: float = GATHER_SECONDS) -> None:
        self._db = db
        self._fleet = fleet
        self._gather_seconds = gather_seconds
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._recent: deque[int] = deque(maxlen=RECENT_BATCHES)  # the sizes of the last batches
        self._wanted = 0  # while gathering: the queue's length that ends the wait
        self._enough = asyncio.Event()
        self._stopped_at = -math.inf  # when the drainer last stopped (loop time)

    async def submit(self, work: Callable[[Session], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        if len(self._queue) >= self._wanted:
            self._enough.set()
        if self._drainer is None:
            loop = asyncio.get_running_loop()
            if loop.time() - self._stopped_at > FORGET_SECONDS:
                self._recent.clear()
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _gather(self) -> None:
        """Wait at most `gather_seconds` for the queue to hold as many writes as the largest recent batch."""
        self._wanted = max(self._recent, default=0)
        if len(self._queue) < self._wanted:
            self._enough.clear()
            with contextlib.suppress(TimeoutError):  # not wait_for, which on 3.11 can swallow a cancel
                async with asyncio.timeout(self._gather_seconds):
                    await self._enough.wait()
        self._wanted = 0

    async def _drain(self) -> None:
        try:
            while True:
                await self._gather()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
                self._recent.append(len(batch))
                works = [work for work, _ in batch]
                try:
                    outcomes = await self._fleet.write_then_catch_up(functools.partial(self._commit, works))
                except Exception as exc:  # the commit failed: none of them is stored
                    outcomes = [_Outcome(error=exc)] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if outcome.error is not None:
                        future.set_exception(outcome.error)
                    else:
                        future.set_result(outcome.value)
        finally:
            self._drainer = None
            self._stopped_at = asyncio.get_running_loop().time()

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
