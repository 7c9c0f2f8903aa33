"""Leadership on PostgreSQL: one leader at a time, and a standby that waits on one connection."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from rrm.store.leadership import Leadership

from .databases import fresh_postgres_database
from .harness import wait_until


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def leader_backends(url: str) -> set[int]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'rrm-leader' AND datname = current_database()"
        ).fetchall()
    return {pid for (pid,) in rows}


def test_a_standby_asks_again_on_its_one_connection_and_leads_once_the_leader_is_gone(
    database_url: str,
) -> None:
    leader, standby = Leadership(database_url, None), Leadership(database_url, None)
    try:
        assert leader.try_acquire()
        assert not standby.try_acquire()
        backends = leader_backends(database_url)
        assert len(backends) == 2
        for _ in range(3):
            assert not standby.try_acquire()
            assert leader.try_acquire()
        assert leader_backends(database_url) == backends, "a standby or the leader connected anew"

        leader.release()  # its backend drops the lock as it exits, a moment after the connection closed
        wait_until(standby.try_acquire, 10, "the standby did not take over")
        assert not leader.try_acquire()
    finally:
        leader.release()
        standby.release()
    # a closed connection's backend leaves pg_stat_activity a moment later
    wait_until(lambda: not leader_backends(database_url), 10, "a leadership connection stayed open")
