"""Databases for test servers: a SQLite file in the data dir, or a fresh PostgreSQL database per server
(or per group of replicas), created on the server of `RRM_TEST_DATABASE_URL` and dropped afterwards, so
runs and tests never see each other's data."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")
CHECKPOINT_RETRY_SECONDS = 120.0  # test_store_faults keeps a tablespace full for well under this


def admin_url() -> str:
    return os.environ.get("RRM_TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL


def postgres_available() -> bool:
    try:
        with psycopg.connect(admin_url(), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def require_postgres() -> None:
    """PostgreSQL tests fail when CI=true and the server is missing; elsewhere they are skipped."""
    if postgres_available():
        return
    message = f"PostgreSQL is not reachable at {admin_url()} (set RRM_TEST_DATABASE_URL)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty database and yield its URL; drop it (closing its connections) afterwards."""
    require_postgres()
    name = f"rrm_test_{uuid.uuid4().hex[:12]}"
    run_admin(f'CREATE DATABASE "{name}"')
    base = admin_url().rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        run_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_admin(statement: str) -> None:
    """One statement on an admin connection, retried while the server fails checkpoints.

    CREATE and DROP DATABASE ask for a checkpoint, and PostgreSQL fails every checkpoint while any
    tablespace is full ("checkpoint request failed"): test_store_faults fills one on purpose, so a test
    beside it waits until that test has freed the space instead of failing."""
    deadline = time.monotonic() + CHECKPOINT_RETRY_SECONDS
    while True:
        try:
            with psycopg.connect(admin_url(), autocommit=True) as connection:
                connection.execute(statement.encode())
            return
        except psycopg.errors.InternalError as exc:
            if "checkpoint request failed" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


@contextmanager
def database_for(backend: str) -> Iterator[str | None]:
    """None means the server's own SQLite file in its data dir."""
    if backend == "sqlite":
        yield None
        return
    with fresh_postgres_database() as url:
        yield url
