"""What the control plane asks of its host: open files for thousands of agents, no temporary files."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from rrm.server.app import raise_open_file_limit
from rrm.store import Database
from rrm.store.database import HEAD_REVISION, MIGRATIONS

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


def test_the_known_head_revision_is_alembics() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


SERVER_ON_SQLITE = """
import sys
from pathlib import Path
import rrm.server.app
from rrm.store import Database
from rrm.store.leadership import Leadership

path = Path(sys.argv[1])
db = Database(f"sqlite:///{path}")
db.migrate()
assert Leadership(db.url, path).try_acquire()
print(" ".join(m for m in ("alembic", "psycopg", "kubernetes") if m in sys.modules))
"""


def test_a_server_on_an_up_to_date_sqlite_database_loads_no_alembic_psycopg_or_kubernetes(
    tmp_path: Path,
) -> None:
    """Each would stay in memory for the life of the process: about 10 MB apiece (kubernetes: only binding
    an environment's kubeconfig needs it, `rrm.server.environment_broker.kubeconfigs`)."""
    path = tmp_path / "rrm.db"
    first = subprocess.run(
        [sys.executable, "-c", SERVER_ON_SQLITE, str(path)], capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["alembic"], "a new database is migrated with Alembic"
    again = subprocess.run(
        [sys.executable, "-c", SERVER_ON_SQLITE, str(path)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == []
