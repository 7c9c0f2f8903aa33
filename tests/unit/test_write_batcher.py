"""Group commit: writes that arrive together share one transaction, each in its own savepoint."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.orm import Session

from rrm.server.fleet import Fleet
from rrm.server.secretbox import SecretBox, load_or_create_key
from rrm.server.state import utcnow
from rrm.server.writes import Discard, Work, WriteBatcher
from rrm.store import Database
from rrm.store import repositories as repo


class CountingBatcher(WriteBatcher):
    def __init__(self, db: Database, fleet: Fleet, gather_seconds: float = 0.002) -> None:
        super().__init__(db, fleet, gather_seconds)
        self.transactions: list[int] = []

    def _commit(
        self, first: list[tuple[Work, asyncio.Future[Any]]], wanted: int, taken: list[asyncio.Future[Any]]
    ) -> list[Any]:
        outcomes = super()._commit(first, wanted, taken)
        self.transactions.append(len(taken))
        return outcomes


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'rrm.db'}")
    database.migrate()
    return database


def event(subject: str, *, then: BaseException | None = None) -> Callable[[Session], str]:
    def work(session: Session) -> str:
        repo.record_event(session, "Test", subject, "", utcnow())
        session.flush()
        if then is not None:
            raise then
        return subject

    return work


def test_a_refused_or_discarded_write_leaves_the_others_of_its_batch(db: Database, tmp_path: Path) -> None:
    batcher = CountingBatcher(db, Fleet(db, SecretBox(load_or_create_key(tmp_path))))

    async def run() -> list[object]:
        return await asyncio.gather(
            batcher.submit(event("a")),
            batcher.submit(event("b", then=ValueError("refused"))),
            batcher.submit(event("c", then=Discard("dry run"))),
            batcher.submit(event("d")),
            return_exceptions=True,
        )

    results = asyncio.run(run())

    assert results[0] == "a" and results[3] == "d" and results[2] == "dry run"
    assert isinstance(results[1], ValueError)
    assert batcher.transactions == [4], "the four writes did not share one transaction"
    with db.read() as session:
        stored = [e.subject for e in repo.events_after(session, 0, 100)]
    assert stored == ["a", "d"]


class CommitFails(Database):
    @contextmanager
    def write(self, *, exclusive: bool = True) -> Iterator[Session]:
        with super().write(exclusive=exclusive) as session:
            yield session
            raise OSError("disk full")  # as the commit would: the transaction is rolled back


def test_writes_that_all_succeed_share_their_transaction_without_savepoints(
    db: Database, tmp_path: Path
) -> None:
    with db.write() as session:
        engine = session.get_bind()
    savepoints: list[str] = []
    sqlalchemy_event.listen(engine, "savepoint", lambda _connection, name: savepoints.append(name))
    batcher = CountingBatcher(db, Fleet(db, SecretBox(load_or_create_key(tmp_path))))

    async def run() -> list[str]:
        return await asyncio.gather(*(batcher.submit(event(name)) for name in "abc"))

    assert asyncio.run(run()) == ["a", "b", "c"]
    assert batcher.transactions == [3] and savepoints == []
    with db.read() as session:
        assert [e.subject for e in repo.events_after(session, 0, 100)] == ["a", "b", "c"]


class BeginFails(Database):
    @contextmanager
    def write(self, *, exclusive: bool = True) -> Iterator[Session]:
        raise OSError("disk I/O error")  # as BEGIN would
        yield  # a generator, as the real one


def test_when_the_transaction_cannot_begin_the_writes_waiting_for_it_fail(tmp_path: Path) -> None:
    db = BeginFails(f"sqlite:///{tmp_path / 'rrm.db'}")
    batcher = WriteBatcher(db, Fleet(db, SecretBox(load_or_create_key(tmp_path))))

    async def run() -> list[object]:
        writes = (batcher.submit(event("x")), batcher.submit(event("y")))
        return await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 30)

    assert [type(r) for r in asyncio.run(run())] == [OSError, OSError]


def test_when_the_commit_fails_every_write_of_the_batch_fails(tmp_path: Path) -> None:
    db = CommitFails(f"sqlite:///{tmp_path / 'rrm.db'}")
    db.migrate()
    batcher = WriteBatcher(db, Fleet(db, SecretBox(load_or_create_key(tmp_path))))

    async def run() -> list[object]:
        return await asyncio.gather(
            batcher.submit(event("x")), batcher.submit(event("y")), return_exceptions=True
        )

    assert [type(r) for r in asyncio.run(run())] == [OSError, OSError]
    with db.read() as session:
        assert list(repo.events_after(session, 0, 100)) == []


def test_writers_that_come_back_after_their_answer_share_the_next_transaction(
    db: Database, tmp_path: Path
) -> None:
    """Three writers answered together send again one after the other: the batcher waits for them
    (up to its gather time, here far longer than the test) instead of committing the first alone."""
    batcher = CountingBatcher(db, Fleet(db, SecretBox(load_or_create_key(tmp_path))), gather_seconds=60)

    async def writer(name: str) -> None:
        await batcher.submit(event(f"{name}1"))
        for _ in range(int(name)):  # each comes back a few turns of the loop later than the one before
            await asyncio.sleep(0)
        await batcher.submit(event(f"{name}2"))

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(writer("1"), writer("2"), writer("3")), 30)

    asyncio.run(run())
    assert batcher.transactions == [3, 3]


def test_a_lone_writer_is_not_kept_waiting(db: Database, tmp_path: Path) -> None:
    batcher = CountingBatcher(db, Fleet(db, SecretBox(load_or_create_key(tmp_path))), gather_seconds=60)

    async def run() -> list[str]:
        return [await batcher.submit(event(str(i))) for i in range(3)]

    assert asyncio.run(asyncio.wait_for(run(), 30)) == ["0", "1", "2"]
    assert batcher.transactions == [1, 1, 1]


def test_writers_slower_to_come_back_than_the_gather_time_still_share_a_transaction(
    db: Database, tmp_path: Path
) -> None:
    """The drainer stops when no write came within its gather time; the batch sizes it saw are kept for the
    writers that come back soon after, so the first of them waits for the others instead of going alone."""
    batcher = CountingBatcher(db, Fleet(db, SecretBox(load_or_create_key(tmp_path))), gather_seconds=0.05)
    answered = asyncio.Event()
    back = asyncio.Event()

    async def writer(name: str) -> None:
        await batcher.submit(event(f"{name}1"))
        answered.set()
        await back.wait()
        for _ in range(int(name)):  # each comes back a few turns of the loop later than the one before
            await asyncio.sleep(0)
        await batcher.submit(event(f"{name}2"))

    async def stopped() -> None:
        await answered.wait()
        deadline = asyncio.get_running_loop().time() + 10
        while batcher._drainer is not None:  # the drainer waits out its gather time, then stops
            assert asyncio.get_running_loop().time() < deadline, "the drainer did not stop"
            await asyncio.sleep(0.01)
        back.set()

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(writer("1"), writer("2"), writer("3"), stopped()), 30)

    asyncio.run(run())
    assert batcher.transactions == [3, 3]


def test_a_write_runs_as_soon_as_its_transaction_takes_it_while_the_others_are_awaited(
    db: Database, tmp_path: Path
) -> None:
    """Three writers shared the last transaction; the first of them to come back is run at once, in a
    transaction that goes on taking the other two as they come (here only after the first has run)."""
    batcher = CountingBatcher(db, Fleet(db, SecretBox(load_or_create_key(tmp_path))), gather_seconds=60)
    ran = threading.Event()

    def first(session: Session) -> str:
        ran.set()
        return event("a2")(session)

    async def run() -> list[str]:
        await asyncio.gather(*(batcher.submit(event(f"{name}1")) for name in "abc"))
        answered = asyncio.ensure_future(batcher.submit(first))
        deadline = asyncio.get_running_loop().time() + 10
        while not ran.is_set():
            assert asyncio.get_running_loop().time() < deadline, "the first write waited for the others"
            await asyncio.sleep(0.01)
        return [*await asyncio.gather(answered, batcher.submit(event("b2")), batcher.submit(event("c2")))]

    assert asyncio.run(asyncio.wait_for(run(), 30)) == ["a2", "b2", "c2"]
    assert batcher.transactions == [3, 3]
    with db.read() as session:
        assert [e.subject for e in repo.events_after(session, 0, 100)] == ["a1", "b1", "c1", "a2", "b2", "c2"]
