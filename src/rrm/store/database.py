"""Engines and sessions. SQLite gets WAL, one serialized writer and `BEGIN IMMEDIATE` so writers never
deadlock on lock upgrades; PostgreSQL uses one ordinary pool for both.

The processes of `rrm server --workers N` on one SQLite file take turns at writing through a blocking
`flock` on a file beside the database, held from before `BEGIN IMMEDIATE` to after the commit: SQLite's own
busy handler waits for a locked database by sleeping 1, 2, 5, ... up to 100 ms between tries, so a worker
that lost the lock to a sibling committing back to back slept through many of its commits (8 concurrent
writers, 2 workers: p99 1.06 s per write), while a process blocked on the flock is woken when it is freed."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0009"  # the newest file in migrations/versions (a unit test holds the two together)
# PostgreSQL advisory lock keys ("rrm" + a number), shared by every replica.
WRITE_LOCK = 0x72726D01
MIGRATION_LOCK = 0x72726D02
CHANGE_RECORDED = "rrm.change_recorded"  # in a write session's info: it appended to the change feed
SQLITE_FULL = 13  # "database or disk is full"; extended result codes keep it in their low byte
DISK_FULL_SQLSTATE = "53100"  # PostgreSQL's disk_full: "could not extend file ..."


def out_of_space(exc: BaseException) -> bool:
    """Whether a failed database call failed because the store's disk is full (the driver's error, or the
    SQLAlchemy error wrapping it)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        sqlite_code = getattr(seen, "sqlite_errorcode", None)
        if isinstance(sqlite_code, int) and sqlite_code & 0xFF == SQLITE_FULL:
            return True
        if getattr(seen, "sqlstate", None) == DISK_FULL_SQLSTATE:
            return True
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _private_sqlite_files(path: Path) -> None:
    """The database holds token hashes and sealed secrets: it is created 0600, like the key file. SQLite
    creates its -wal and -shm files with the database file's mode, so that covers them; files an older
    version made 0644 are made 0600 here. Raises OSError naming the file when it cannot be written."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    if not os.access(path.parent, os.W_OK):
        raise OSError(
            errno.EACCES, "not writable (SQLite creates its -wal and -shm files there)", str(path.parent)
        )
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(FileNotFoundError):
            if (path.with_name(name).stat().st_mode & 0o077) != 0:
                path.with_name(name).chmod(0o600)


def startup_problem(exc: OSError | OperationalError) -> str:
    """One line for an operator when the store cannot be used at start: a data directory that cannot be
    written (read-only, full, not ours), a database that cannot be reached."""
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"cannot use the data directory: {where}{exc.strerror or exc}"
    return f"cannot use the database: {first_line(exc.orig or exc)}"


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (a driver's can go on with context), or its class name."""
    return next(iter(str(exc).strip().splitlines()), type(exc).__name__)


def _sqlite_engine(url: str, *, writer: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=1 if writer else 8,
        max_overflow=0 if writer else 8,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # no temporary files: with every descriptor taken by agents' connections, opening one failed
        # ("unable to open database file") and status reports were answered 500
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def normalize_url(url: str) -> str:
    """Accept `postgresql://` and pick the psycopg 3 driver, which is what the package installs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.sqlite_path = Path(self.url.split(":///", 1)[1]) if self.is_sqlite else None
        # why the last write failed for lack of space, and when (monotonic); None again once a write
        # succeeds (`/readyz`)
        self.out_of_space: str | None = None
        self.out_of_space_at = 0.0
        # SQLite on a file: the flock that gives the processes sharing it their turns at writing
        self._write_lock_path: Path | None = None
        self._write_lock_fd: int | None = None
        self._write_threads = threading.Lock()
        if self.sqlite_path is not None and self.sqlite_path.name not in ("", ":memory:"):
            _private_sqlite_files(self.sqlite_path)
            self._write_lock_path = self.sqlite_path.with_name(f"{self.sqlite_path.name}.write")
        if self.is_sqlite:
            self._reader = _sqlite_engine(self.url, writer=False)
            self._writer = _sqlite_engine(self.url, writer=True)
        else:
            self._writer = create_engine(self.url, pool_size=10, max_overflow=10, pool_pre_ping=True)
            # A read is one snapshot, as a SQLite read transaction in WAL mode is: under READ COMMITTED each
            # statement sees what committed since the one before, so a view read with two statements could
            # pair an old status row with a newer report (the same pool; the level is set per checkout).
            self._reader = self._writer.execution_options(isolation_level="REPEATABLE READ")
        self._read_sessions = sessionmaker(self._reader, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        # called (in the committing thread) after a write that appended to the change feed committed
        self.on_change_committed: Callable[[], None] | None = None
        event.listen(self._write_sessions, "after_commit", self._after_commit)

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        """SQLite: this process's turn at writing the file, among the processes that share it (see the
        module's docstring); the thread lock first, since every thread of the process shares the flock."""
        if self._write_lock_path is None:
            yield
            return
        with self._write_threads:
            if self._write_lock_fd is None:
                self._write_lock_fd = os.open(self._write_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)

    def _after_commit(self, session: Session) -> None:
        """SQLAlchemy calls this for a savepoint's release too (the write batcher gives each write one): the
        change is committed only with the transaction, and a sibling told earlier reads the feed too soon."""
        if session.in_nested_transaction():
            return
        if session.info.pop(CHANGE_RECORDED, False) and self.on_change_committed is not None:
            self.on_change_committed()

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; replicas starting together take turns).

        A database already there is left alone without loading Alembic (10 MB that a long-running server
        would keep for nothing)."""
        if self._schema_revision() == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._writer.connect() as connection:
            if not self.is_sqlite:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
                connection.commit()
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                if not self.is_sqlite:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                    connection.commit()

    def _schema_revision(self) -> str | None:
        with self._reader.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read_sessions() as session, session.begin():
            yield session

    @contextmanager
    def write(self, *, exclusive: bool = True) -> Iterator[Session]:
        """One transaction; commits on success, rolls back on any exception.

        Exclusive writes run one at a time across every replica (SQLite: `BEGIN IMMEDIATE` on the single
        writer; PostgreSQL: a transaction advisory lock). That keeps the change feed in commit order and
        revision numbers strictly increasing. Writes that record no change (status reports) may pass
        `exclusive=False` to run concurrently on PostgreSQL.
        """
        try:
            with self._write_turn(), self._write_sessions() as session, session.begin():
                if exclusive:
                    self.take_write_lock(session)
                yield session
        except Exception as exc:
            self.note_failure(exc)
            raise
        self.out_of_space = None

    def note_failure(self, exc: BaseException) -> None:
        """Remember a write that failed for lack of space; also called for a failure a write caught in a
        savepoint and handed to its request, while the transaction around it committed."""
        if out_of_space(exc):
            self.out_of_space = first_line(getattr(exc, "orig", exc))
            self.out_of_space_at = time.monotonic()

    def probe_write(self) -> None:
        """A real commit that changes nothing (it rewrites the schema revision's row): whether writes get
        through again after some failed for lack of space, when nothing else writes. A small one, so it may
        get through where larger writes still fail."""
        with self.write(exclusive=False) as session:
            session.execute(text("UPDATE alembic_version SET version_num = version_num"))

    def take_write_lock(self, session: Session) -> None:
        """Make a non-exclusive write exclusive from here to its commit, before it records an event or a
        change (SQLite's writes are exclusive from their start)."""
        if not self.is_sqlite:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})

    def ping(self) -> None:
        with self._reader.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self._reader.dispose()
        self._writer.dispose()
        if self._write_lock_fd is not None:
            os.close(self._write_lock_fd)
            self._write_lock_fd = None
