"""The event stream's broadcaster on a real SQLite file: every subscriber gets every event in order, a late
subscriber catches up from the table, and the table is read once per interval however many listen."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rrm.server.eventstream import EventBroadcaster
from rrm.store import Database
from rrm.store import repositories as repo

DEADLINE = 10.0


def record(db: Database, *subjects: str) -> None:
    with db.write() as session:
        for subject in subjects:
            repo.record_event(session, "Test", subject, "m", datetime.now(UTC))


async def collect(broadcaster: EventBroadcaster, after: int, count: int) -> list[str]:
    subjects: list[str] = []
    batches = broadcaster.subscribe(after, keepalive=0.2)
    try:
        async with asyncio.timeout(DEADLINE):
            async for batch in batches:
                subjects += [e["subject"] for e in batch]
                if len(subjects) >= count:
                    return subjects
    finally:
        await batches.aclose()
    return subjects


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'rrm.db'}")
    database.migrate()
    return database


def test_subscribers_share_one_reader_and_see_every_event_in_order(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    record(db, "old/1", "old/2")
    poll_seconds = 0.05
    broadcaster = EventBroadcaster(db, poll_seconds=poll_seconds, keep=3)
    reads: list[int] = []
    intervals: list[float] = []
    reads_while_listening: list[int] = []
    read_after = broadcaster._read_after
    monkeypatch.setattr(
        broadcaster, "_read_after", lambda after, limit: reads.append(after) or read_after(after, limit)
    )

    async def scenario() -> tuple[list[list[str]], list[str]]:
        runner = asyncio.create_task(broadcaster.run())
        start = await broadcaster.latest_id()
        started = time.monotonic()
        listeners = [asyncio.create_task(collect(broadcaster, start, 5)) for _ in range(4)]
        await asyncio.sleep(0.2)
        for index in range(5):
            await asyncio.to_thread(record, db, f"new/{index}")
            await asyncio.sleep(0.06)
        results = await asyncio.gather(*listeners)
        intervals.append((time.monotonic() - started) / poll_seconds)
        reads_while_listening.append(len(reads))
        late = await collect(broadcaster, 0, 7)  # further back than memory (keep=3) reaches
        broadcaster.close()
        runner.cancel()
        return results, late

    results, late = asyncio.run(scenario())
    expected = [f"new/{i}" for i in range(5)]
    assert all(result == expected for result in results)
    assert late == ["old/1", "old/2", *expected]
    # one read per interval for all four subscribers (each reading for itself would be four times as many)
    assert reads_while_listening[0] <= intervals[0] + 2, (reads_while_listening, intervals)


def test_closing_ends_every_subscription(db: Database) -> None:
    broadcaster = EventBroadcaster(db, poll_seconds=0.05)

    async def scenario() -> list[Any]:
        runner = asyncio.create_task(broadcaster.run())
        listener = asyncio.create_task(collect(broadcaster, 0, 1))
        await asyncio.sleep(0.2)
        broadcaster.close()
        result = await asyncio.wait_for(listener, DEADLINE)
        runner.cancel()
        return result

    assert asyncio.run(scenario()) == []
