"""The engine's group commit on a real SQLite store: writes from many threads share transactions, each
caller is answered only once its write is committed, and a write that fails leaves the others stored."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rrm.server.provisioning.group_commit import GroupCommit
from rrm.server.state import ServerState, utcnow
from rrm.store import repositories as repo
from rrm.store.tables import Event


def stored(state: ServerState, subject: str) -> int:
    with state.db.read() as session:
        return int(session.scalar(select(func.count()).where(Event.subject == subject)) or 0)


def test_threads_share_commits_and_each_is_answered_after_its_own(state: ServerState) -> None:
    writes = GroupCommit(state.db)
    commits = 0
    count_commits = threading.Lock()
    real_write = state.db.write

    def counted_write() -> AbstractContextManager[Session]:
        nonlocal commits
        with count_commits:
            commits += 1
        return real_write()

    state.db.write = counted_write  # type: ignore[method-assign, assignment]
    seen_after: list[int] = []
    gate = threading.Barrier(16)

    def writer(i: int) -> None:
        gate.wait()
        for n in range(5):

            def work(session: Session, n: int = n) -> None:
                repo.record_event(session, "Test", f"writer/{i}", f"write {n}", utcnow())

            writes.write(work)
            seen_after.append(stored(state, f"writer/{i}") - (n + 1))  # 0: its write is there

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(seen_after) == 80 and set(seen_after) == {0}, "every write committed before its answer"
    assert commits < 80, f"{commits} commits for 80 writes: none shared"


def test_a_failing_write_is_raised_to_its_caller_and_leaves_the_others(state: ServerState) -> None:
    writes = GroupCommit(state.db)
    errors: list[BaseException] = []
    gate = threading.Barrier(8)

    def writer(i: int) -> None:
        def work(session: Session) -> None:
            repo.record_event(session, "Test", f"w/{i}", "written", utcnow())
            if i % 2:
                raise ValueError(f"writer {i} refuses")

        gate.wait()
        try:
            writes.write(work)
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(str(e) for e in errors) == [f"writer {i} refuses" for i in (1, 3, 5, 7)]
    assert [stored(state, f"w/{i}") for i in range(8)] == [1, 0, 1, 0, 1, 0, 1, 0]
