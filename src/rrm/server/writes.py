"""Group commit for admin writes: the writes that arrive while one transaction commits go together into the
next one (a refused write leaves the others: see `WriteBatcher._commit`), with one commit (one fsync, one
turn of the write lock) and one catch-up of the fleet for all of them. Each caller is answered only after
the commit that holds its write, so nothing acknowledged can be lost.

A transaction takes the writes waiting when it begins and runs each at once; while it has taken fewer
than the recent batches held, it goes on taking writes as they arrive, for at most `gather_seconds`, so
that concurrent writers keep sharing transactions instead of the first to come back taking a commit and a
catch-up for itself alone. The writes that come during that time are run as they come, not after it: the
other writers' requests are read and answered on the event loop while the transaction's thread stores
the first ones (waiting for them first, then running them all, left both idle in turn: with 8 writers
the wait was 7 to 9 ms of each transaction's 26 to 28, on a busy machine). A lone writer, or a batch as
large as the recent ones, does not wait. The recent batch sizes outlive a drainer that stopped for want
of writes (the writers were slower to come back than the gather time) unless nothing came for
`FORGET_SECONDS`: forgotten at each stop, the next write went alone into a transaction, the others into
the next one, and eight concurrent writers settled on a mean of two writes per transaction."""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
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
        # appended to on the event loop, taken from by the transaction's thread: both under the lock
        self._arrived = threading.Condition()
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._recent: deque[int] = deque(maxlen=RECENT_BATCHES)  # the sizes of the last batches
        self._stopped_at = -math.inf  # when the drainer last stopped (loop time)

    async def submit(self, work: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._arrived:
            self._queue.append((work, future))
            self._arrived.notify()
        if self._drainer is None:
            if loop.time() - self._stopped_at > FORGET_SECONDS:
                self._recent.clear()
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """One transaction after the other while writes wait; only this task starts them, and only submit
        (on the same loop) adds writes, so none is left behind when it stops."""
        try:
            while self._queue:
                wanted = max(self._recent, default=0)
                first = self._take(0, 0, 0.0)
                taken = [future for _, future in first]  # and those the transaction takes while it runs
                try:
                    commit = functools.partial(self._commit, first, wanted, taken)
                    outcomes = await self._fleet.write_then_catch_up(commit)
                except Exception as exc:  # the transaction failed: none of its writes is stored
                    outcomes = [_Outcome(error=exc)] * len(taken)
                self._recent.append(len(taken))
                for future, outcome in zip(taken, outcomes, strict=True):
                    if future.done():
                        continue
                    if outcome.error is not None:
                        future.set_exception(outcome.error)
                    else:
                        future.set_result(outcome.value)
        finally:
            self._drainer = None
            self._stopped_at = asyncio.get_running_loop().time()

    def _take(self, wanted: int, taken: int, deadline: float) -> list[tuple[Work, asyncio.Future[Any]]]:
        """The writes waiting; while fewer than `wanted` were taken, wait for one until `deadline`."""
        with self._arrived:
            while not self._queue and taken < wanted:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            batch, self._queue = self._queue, []
        return batch

    def _commit(
        self, first: list[tuple[Work, asyncio.Future[Any]]], wanted: int, taken: list[asyncio.Future[Any]]
    ) -> list[_Outcome]:
        """In the transaction's thread: run `first`, then the writes that arrive meanwhile, each as it is
        taken (its future goes to `taken`, for the event loop to answer after the commit), until `wanted`
        were taken or the gather time is over; then commit them together.

        The writes run side by side, without a savepoint each: most succeed, and a savepoint (the ORM's,
        with its flushes and its SAVEPOINT and RELEASE statements) cost about a third of a component
        write's work in its transaction. When one of them raises (refused, a dry run, a failure), its
        changes cannot be told from the others', so the transaction is rolled back and every write of it
        runs again in a new one, each in its own savepoint."""
        works = [work for work, _ in first]
        try:
            with self._db.write() as session:
                deadline = time.monotonic() + self._gather_seconds
                values = [_run_together(session, work) for work in works]
                while batch := self._take(wanted, len(taken), deadline):
                    for work, future in batch:
                        taken.append(future)
                        works.append(work)
                        values.append(_run_together(session, work))
        except _Raised:
            with self._db.write() as session:
                return [_run_alone(session, work) for work in works]
        return [_Outcome(value=value) for value in values]


class _Raised(Exception):
    """A write run beside others without a savepoint raised: the transaction must be undone."""


def _run_together(session: Session, work: Work) -> Any:
    """One write, flushed before the next runs (so its failure is its own, and the ORM's inserts keep their
    order with the next write's statements); raises `_Raised` if it raised anything."""
    try:
        value = work(session)
        session.flush()
    except Exception as exc:
        raise _Raised from exc
    return value


def _run_alone(session: Session, work: Work) -> _Outcome:
    """One write in its own savepoint: refused or discarded, it leaves the others of its transaction."""
    savepoint = session.begin_nested()
    try:
        outcome = _Outcome(value=work(session))
    except Discard as discarded:
        savepoint.rollback()
        return _Outcome(value=discarded.value)
    except Exception as exc:
        savepoint.rollback()
        return _Outcome(error=exc)
    savepoint.commit()
    return outcome
