"""SQLite: the processes sharing one database file take turns at writing through a flock beside it, held
for the whole write transaction (the commit included), so a waiting process is woken when the turn is
free instead of sleeping in SQLite's busy handler."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from rrm.store import Database


def _turn_is_free(path: Path) -> bool:
    """Whether another holder (a fresh open file, as another process has) could take the turn now."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'rrm.db'}")
    database.migrate()
    return database


def test_a_write_holds_the_turn_until_it_has_committed(db: Database, tmp_path: Path) -> None:
    turn = tmp_path / "rrm.db.write"
    with db.write() as session:
        session.execute(text("UPDATE alembic_version SET version_num = version_num"))
        assert not _turn_is_free(turn)
    assert _turn_is_free(turn)
    assert (turn.stat().st_mode & 0o077) == 0


def test_a_failed_write_gives_the_turn_back(db: Database, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), db.write():
        raise RuntimeError("refused")
    assert _turn_is_free(tmp_path / "rrm.db.write")


def test_a_second_database_on_the_file_waits_for_the_turn(db: Database, tmp_path: Path) -> None:
    """Two Database objects open the lock file apart, as two worker processes do. The second one's SQLite
    waits for no lock at all (busy timeout 0): without the turn its BEGIN IMMEDIATE would fail at once."""
    other = Database(f"sqlite:///{tmp_path / 'rrm.db'}")
    with other._writer.connect() as connection:  # the writer's one pooled connection
        connection.exec_driver_sql("PRAGMA busy_timeout=0")
    inside, release, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with db.write():
            inside.set()
            release.wait(10)
            order.append("first commits")

    def second() -> None:
        inside.wait(10)
        with other.write():
            order.append("second writes")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    assert inside.wait(10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first commits", "second writes"]
    other.dispose()
