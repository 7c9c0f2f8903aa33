"""The workers of one `rrm server` on SQLite: a commit that appended to the change feed reaches the sibling
workers' sockets, and nothing else does."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

from rrm.server.wakeups import WorkerWakeups
from rrm.store import Database
from rrm.store import repositories as repo


def test_a_byte_from_one_worker_wakes_its_sibling_not_itself(tmp_path: Path) -> None:
    database = tmp_path / "rrm.db"

    async def scenario() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        woken = {0: 0, 1: 0}
        got_one = asyncio.Event()
        first, second = WorkerWakeups(database, 0, 2), WorkerWakeups(database, 1, 2)

        def on_wake(slot: int) -> None:
            woken[slot] += 1
            got_one.set()

        first.listen(loop, lambda: on_wake(0))
        second.listen(loop, lambda: on_wake(1))
        try:
            first.tell_siblings()
            await asyncio.wait_for(got_one.wait(), 5)
            await asyncio.sleep(0)  # a byte to itself would have arrived by now as well
        finally:
            first.close(loop)
            second.close(loop)
        return woken[0], woken[1]

    assert asyncio.run(scenario()) == (0, 1)


def test_telling_a_sibling_that_is_not_running_is_no_error(tmp_path: Path) -> None:
    WorkerWakeups(tmp_path / "rrm.db", 0, 3).tell_siblings()


def test_the_commit_hook_runs_after_a_commit_that_recorded_a_change_only(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'rrm.db'}")
    db.migrate()
    calls: list[str] = []
    db.on_change_committed = lambda: calls.append("committed")
    now = datetime.now(UTC)
    with db.write() as session:
        repo.record_event(session, "Noted", "runtime/x", "no change to the feed", now)
    assert calls == []
    with contextlib.suppress(RuntimeError), db.write() as session:
        repo.record_change(session, repo.ENTITY_COMPONENT, "web", now)
        raise RuntimeError("rolled back")
    assert calls == []
    with db.write() as session:
        repo.record_change(session, repo.ENTITY_COMPONENT, "web", now)
    assert calls == ["committed"]
    db.dispose()


def test_the_commit_hook_runs_once_the_transaction_around_a_savepoint_committed(tmp_path: Path) -> None:
    """The write batcher gives each write its savepoint: a sibling told when the savepoint is released reads
    the feed before the commit, finds nothing, and its agents wait for its next poll of the feed."""
    db = Database(f"sqlite:///{tmp_path / 'rrm.db'}")
    db.migrate()
    seen: list[int] = []

    def committed() -> None:
        with db.read() as session:  # what a sibling's catch-up reads
            seen.append(len(repo.changes_after(session, 0)))

    db.on_change_committed = committed
    now = datetime.now(UTC)
    with db.write() as session:
        savepoint = session.begin_nested()
        repo.record_change(session, repo.ENTITY_COMPONENT, "web", now)
        savepoint.commit()
        assert seen == [], "siblings were told before the transaction committed"
    assert seen == [1]
    db.dispose()
