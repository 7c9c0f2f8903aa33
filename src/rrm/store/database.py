"""Engines and sessions. SQLite gets WAL, one serialized writer and `BEGIN IMMEDIATE` so writers never
deadlock on lock upgrades; PostgreSQL uses one ordinary pool for both."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0006"  # the newest file in migrations/versions (a unit test holds the two together)
# PostgreSQL advisory lock keys ("rrm" + a number), shared by every replica.
WRITE_LOCK = 0x72726D01
MIGRATION_LOCK = 0x72726D02


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
        if self.is_sqlite:
            self._reader = _sqlite_engine(self.url, writer=False)
            self._writer = _sqlite_engine(self.url, writer=True)
        else:
            self._reader = self._writer = create_engine(
                self.url, pool_size=10, max_overflow=10, pool_pre_ping=True
            )
        self._read_sessions = sessionmaker(self._reader, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)

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
        with self._write_sessions() as session, session.begin():
            if exclusive:
                self.take_write_lock(session)
            yield session

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
