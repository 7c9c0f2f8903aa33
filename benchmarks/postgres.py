"""A fresh PostgreSQL database per replicas run, on the server the integration tests use.

The server is `RRM_TEST_DATABASE_URL` (an admin connection URL), default
postgresql://postgres@127.0.0.1:5432/test. Each run creates `rrm_bench_<random>` there and drops it
afterwards (closing its connections), also when the run fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from tests.integration.databases import run_admin

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN_URL_ENV = "RRM_TEST_DATABASE_URL"


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL


def describe() -> str:
    """host:port of the server (no user name or password), for the results."""
    parts = urlsplit(admin_url())
    return f"{parts.hostname}:{parts.port or 5432}"


def unreachable() -> str | None:
    """Why the server cannot be used, or None when it can."""
    try:
        with psycopg.connect(admin_url(), connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL is not reachable at {describe()} (set {ADMIN_URL_ENV}): {first}"
    return None


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create an empty database and yield its URL; drop it afterwards, whatever happened meanwhile."""
    name = f"rrm_bench_{uuid.uuid4().hex[:12]}"
    run_admin(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(admin_url())._replace(path=f"/{name}"))
    finally:
        run_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
