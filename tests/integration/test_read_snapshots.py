"""A read transaction is one snapshot on both backends: a view built from several statements never pairs
rows of different moments. PostgreSQL's default (READ COMMITTED) would let each statement see what
committed since the one before; the runtime detail then showed a new report beside an old `last_seen`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from rrm.store import Database

from .databases import BACKENDS, database_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_for(request.param) as url:
        database = Database(url or f"sqlite:///{tmp_path / 'rrm.db'}")
        try:
            with database.write() as session:
                session.execute(text("CREATE TABLE seen (value integer)"))
                session.execute(text("INSERT INTO seen VALUES (1)"))
            yield database
        finally:
            database.dispose()


def test_a_read_does_not_see_what_committed_after_its_first_statement(db: Database) -> None:
    with db.read() as session:
        before = session.execute(text("SELECT value FROM seen")).scalar_one()
        with db.write() as writer:
            writer.execute(text("UPDATE seen SET value = 2"))
        during = session.execute(text("SELECT value FROM seen")).scalar_one()
    with db.read() as session:
        after = session.execute(text("SELECT value FROM seen")).scalar_one()
    assert (before, during, after) == (1, 1, 2)
