"""Group commit: writes that arrive together share one transaction, each in its own savepoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from rrm.server.fleet import Fleet
from rrm.server.secretbox import SecretBox, load_or_create_key
from rrm.server.state import utcnow
from rrm.server.writes import Discard, Work, WriteBatcher
from rrm.store import Database
from rrm.store import repositories as repo


class CountingBatcher(WriteBatcher):
    def __init__(self, db: Database, fleet: Fleet) -> None:
        super().__init__(db, fleet)
        self.transactions: list[int] = []

    def _commit(self, works: list[Work]) -> list[Any]:
        self.transactions.append(len(works))
        return super()._commit(works)


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
