"""Databases for test servers: a SQLite file in the data dir, or a fresh PostgreSQL database per server
(or per group of replicas), created on the server of `RRM_TEST_DATABASE_URL` and dropped afterwards, so
runs and tests never see each other's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


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
    with psycopg.connect(admin_url(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = admin_url().rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_for(backend: str) -> Iterator[str | None]:
    """None means the server's own SQLite file in its data dir."""
    if backend == "sqlite":
        yield None
        return
    with fresh_postgres_database() as url:
        yield url
