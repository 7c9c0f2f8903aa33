"""What the control plane asks of its host: open files for thousands of agents, no temporary files."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from rrm.server.app import raise_open_file_limit
from rrm.store import Database

SQLITE_TEMP_STORE_MEMORY = 2


@pytest.fixture
def lowered_open_file_limit() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, hard, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_server_lifts_its_soft_open_file_limit_to_the_hard_one(lowered_open_file_limit: int) -> None:
    assert raise_open_file_limit() == lowered_open_file_limit
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (lowered_open_file_limit, lowered_open_file_limit)


def test_sqlite_keeps_temporary_data_in_memory(tmp_path: Path) -> None:
    """A multi-row UPDATE may need a temporary file; with every descriptor taken by agents' sockets SQLite
    could not open one and the status writer failed."""
    db = Database(f"sqlite:///{tmp_path / 'rrm.db'}")
    try:
        with db.read() as session:
            assert session.scalar(text("PRAGMA temp_store")) == SQLITE_TEMP_STORE_MEMORY
        with db.write() as session:
            assert session.scalar(text("PRAGMA temp_store")) == SQLITE_TEMP_STORE_MEMORY
    finally:
        db.dispose()
