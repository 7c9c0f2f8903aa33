"""The batched status writes: set-based statements whatever the batch size, one event per newly applied
state, and what each flush wrote handed to the process's leader."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fleet_fixtures import Store

from rrm.server.state import utcnow
from rrm.server.status_writer import StatusWriter
from rrm.store import repositories as repo
from rrm.wire.protocol import StatusReport, dumps


async def _reported(writer: StatusWriter, *batches: dict[str, StatusReport]) -> None:
    """Each batch's reports together, one batch after the other, on one event loop."""
    runner = asyncio.create_task(writer.run())
    try:
        for reports in batches:
            submitted = (writer.submit(r, f"name-{r}", body, dumps(body)) for r, body in reports.items())
            await asyncio.wait_for(asyncio.gather(*submitted), timeout=60)
    finally:
        runner.cancel()


def test_a_batch_writes_every_report_and_one_event_per_newly_applied_state(tmp_path: Path) -> None:
    store = Store(tmp_path)
    runtimes = [store.runtime(f"rt-{i}") for i in range(3)]
    writer = StatusWriter(store.db, interval=0)
    first = {r: StatusReport(applied_hash="a" * 64) for r in runtimes}
    changed = {runtimes[0]: StatusReport(applied_hash="b" * 64)}
    heartbeats = {r: StatusReport(applied_hash="a" * 64) for r in runtimes[1:]}
    asyncio.run(_reported(writer, first, changed | heartbeats))
    with store.db.read() as session:
        statuses = repo.statuses_for(session, runtimes)
        applied = [e.subject for e in repo.events_after(session, 0, 100) if e.type == "DesiredStateApplied"]
    assert [statuses[r].applied_hash for r in runtimes] == ["b" * 64, "a" * 64, "a" * 64]
    assert {statuses[r].reported_by for r in runtimes} == {writer.sightings.writer}
    names = [f"runtime/name-{r}" for r in runtimes]
    assert sorted(applied) == sorted([*names, names[0]])
    sighted = writer.sightings.take()
    assert set(sighted) == set(runtimes)
    observed = sighted[runtimes[0]].observed
    assert observed is not None and observed.applied_hash == "b" * 64
    assert observed.report["applied_hash"] == "b" * 64
    assert writer.sightings.take() == {}


def test_contacts_of_more_runtimes_than_sqlite_has_placeholders_are_one_statement(tmp_path: Path) -> None:
    """SQLite allows at most 32,766 bound parameters in a statement: one per runtime would fail here."""
    store = Store(tmp_path)
    runtime = store.runtime("rt")
    writer = StatusWriter(store.db, interval=0)
    asyncio.run(_reported(writer, {runtime: StatusReport(applied_hash="a" * 64)}))
    many = [runtime, *(f"absent-{i}" for i in range(40_000))]
    later = utcnow()
    with store.db.write() as session:
        repo.touch_statuses(session, many, later)
    with store.db.read() as session:
        pairs = [(runtime_id, "a" * 64) for runtime_id in many]
        assert repo.newly_applied(session, pairs) == set(many[1:])
        status = repo.status_of(session, runtime)
        assert status is not None and status.last_seen == later


def test_repeated_reports_and_contacts_wait_for_a_new_report_or_a_full_batch(tmp_path: Path) -> None:
    """A commit costs about as much as a hundred reports: one that says nothing new does not get its own."""
    store = Store(tmp_path)
    first, second, third = (store.runtime(f"rt-{i}") for i in range(3))
    writer = StatusWriter(store.db, interval=0, quiet_interval=3600, full_batch=2)
    report = StatusReport(applied_hash="a" * 64)
    body = dumps(report)

    async def scenario() -> None:
        runner = asyncio.create_task(writer.run())
        try:
            # new: written at once
            await asyncio.wait_for(writer.submit(first, "first", report, body), timeout=60)
            repeated = asyncio.create_task(writer.submit(first, "first", report, body))
            writer.touch(third)
            done, _ = await asyncio.wait({repeated}, timeout=0.3)
            assert not done, "a repeated report was written on its own"
            # new to this writer
            await asyncio.wait_for(writer.submit(second, "second", report, body), timeout=60)
            await asyncio.wait_for(repeated, timeout=60)
            assert set(writer.sightings.take()) == {first, second, third}
            # two repeats: a full batch
            repeats = (writer.submit(r, r, report, body) for r in (first, second))
            await asyncio.wait_for(asyncio.gather(*repeats), timeout=60)
        finally:
            runner.cancel()

    asyncio.run(scenario())


def test_a_deleted_runtime_is_forgotten_and_its_next_report_counts_as_new(tmp_path: Path) -> None:
    """The writer remembers each runtime's last report to tell a repeat; not for runtimes that are gone."""
    store = Store(tmp_path)
    kept, deleted = store.runtime("kept"), store.runtime("deleted")
    writer = StatusWriter(store.db, interval=0, quiet_interval=3600, full_batch=100)
    report = StatusReport(applied_hash="a" * 64)
    body = dumps(report)

    async def scenario() -> None:
        runner = asyncio.create_task(writer.run())
        try:
            first = (writer.submit(r, r, report, body) for r in (kept, deleted))
            await asyncio.wait_for(asyncio.gather(*first), timeout=60)
            repeated = asyncio.create_task(writer.submit(kept, kept, report, body))
            done, _ = await asyncio.wait({repeated}, timeout=0.3)
            assert not done, "a repeated report was written on its own"
            writer.forget_all_but({kept})
            # the same body again, but nothing is remembered of the runtime: a new report, written at once
            await asyncio.wait_for(writer.submit(deleted, deleted, report, body), timeout=60)
            await asyncio.wait_for(repeated, timeout=60)
        finally:
            runner.cancel()

    asyncio.run(scenario())


def test_contacts_of_a_flush_that_failed_are_written_by_the_next_one(tmp_path: Path) -> None:
    """A runtime heard from only on its watch stream sends no report while it is heard from: a contact
    lost with a failed flush would make it look disconnected."""
    store = Store(tmp_path)
    runtime = store.runtime("rt")
    writer = StatusWriter(store.db, interval=0, quiet_interval=0)
    asyncio.run(_reported(writer, {runtime: StatusReport(applied_hash="a" * 64)}))
    with store.db.read() as session:
        reported = repo.status_of(session, runtime)
    assert reported is not None
    flush, failures = writer._flush, [OSError("disk I/O error")]

    def failing_once(batch: Any, touched: set[str]) -> None:
        if failures:
            raise failures.pop()
        flush(batch, touched)

    writer._flush = failing_once  # type: ignore[method-assign]

    async def scenario() -> None:
        runner = asyncio.create_task(writer.run())
        try:
            writer.touch(runtime)
            async with asyncio.timeout(30):
                while True:
                    with store.db.read() as session:
                        status = repo.status_of(session, runtime)
                    if status is not None and status.last_seen > reported.last_seen:
                        return
                    await asyncio.sleep(0.05)
        finally:
            runner.cancel()

    asyncio.run(scenario())
    assert not failures, "the first flush did not fail"
