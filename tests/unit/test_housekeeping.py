"""The leader's condition bookkeeping: what its own process wrote comes in memory, what other processes
wrote comes from the database, and both end in the same transitions and events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from fleet_fixtures import Store

from rrm.server.fleet import Fleet
from rrm.server.housekeeping import ConditionWatch, record_transitions
from rrm.server.state import ServerState, utcnow
from rrm.server.status_writer import StatusWriter
from rrm.store import repositories as repo
from rrm.wire.protocol import ResourceResult, StatusReport, dumps


class Leader:
    """A process's StatusWriter and its leader's ConditionWatch on one store; `other` writes as a second
    process (another worker or replica) would. The writers run on one event loop for the whole test."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.writer = StatusWriter(store.db, interval=0, quiet_interval=0)
        self.other = StatusWriter(store.db, interval=0, quiet_interval=0)
        self.tasks = [self.loop.create_task(w.run()) for w in (self.writer, self.other)]
        self.fleet = Fleet(store.db, store.box, delivery_window=0)
        self.state = cast(
            ServerState,
            SimpleNamespace(db=store.db, fleet=self.fleet, settings=SimpleNamespace(heartbeat_grace=3.0)),
        )
        self.watch = ConditionWatch(self.writer.sightings)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*self.tasks, return_exceptions=True))
        self.loop.close()

    def report(self, runtime_id: str, body: StatusReport, *, by: StatusWriter | None = None) -> None:
        submitted = (by or self.writer).submit(runtime_id, "rt", body, dumps(body))
        self.loop.run_until_complete(asyncio.wait_for(submitted, timeout=30))

    def applied(self, runtime_id: str, applied_hash: str | None, *, by: StatusWriter | None = None) -> None:
        resources = [ResourceResult(name="web", state="applied")] if applied_hash else []
        body = StatusReport(applied_hash=applied_hash, resources=resources, heartbeat_interval=10.0)
        self.report(runtime_id, body, by=by)

    def touch(self, runtime_id: str) -> datetime:
        """A long-poll's contact; returns the `last_seen` it wrote, once it is written."""
        before = self.last_seen(runtime_id)
        self.writer.touch(runtime_id)

        async def moved() -> None:
            while self.last_seen(runtime_id) == before:
                await asyncio.sleep(0.01)

        self.loop.run_until_complete(asyncio.wait_for(moved(), timeout=30))
        return self.last_seen(runtime_id)

    def last_seen(self, runtime_id: str) -> datetime:
        with self.store.db.read() as session:
            status = repo.status_of(session, runtime_id)
            assert status is not None
            return status.last_seen

    def desired_hash(self, runtime_id: str) -> str:
        self.loop.run_until_complete(self.fleet.load())
        delivery = self.fleet.delivery(runtime_id)
        assert delivery is not None
        return delivery.hash

    def run_pass(self, now: datetime | None = None) -> dict[str, dict[str, str]]:
        """One leader pass at `now`; the statuses it recorded, per runtime and condition type."""
        now = now or utcnow()
        with self.store.db.read() as session:
            self.watch.refresh(session, now)
        fresh = self.watch.evaluate(self.state, now)
        record_transitions(self.state, self.watch, fresh, now)
        with self.store.db.read() as session:
            recorded = repo.condition_transitions(session)
        return {r: {t: status for t, (status, _) in per_type.items()} for r, per_type in recorded.items()}

    def events(self) -> list[tuple[str, str]]:
        with self.store.db.read() as session:
            return [(e.type, e.subject) for e in repo.events_after(session, 0, 1000)]


@pytest.fixture
def leader(tmp_path: Path) -> Iterator[Leader]:
    store = Store(tmp_path)
    store.component("web", selector="env=prod")
    leader = Leader(store)
    yield leader
    leader.close()


def condition_events(leader: Leader) -> list[str]:
    return [t for t, _ in leader.events() if t.startswith(("Connected", "Synced", "Ready"))]


def test_a_report_of_this_process_reaches_the_leader_without_reading_its_row(leader: Leader) -> None:
    runtime = leader.store.runtime("rt", env="prod")
    desired = leader.desired_hash(runtime)
    leader.applied(runtime, None)
    first = leader.run_pass()
    assert first[runtime] == {"Connected": "True", "Synced": "False", "Ready": "False"}
    assert condition_events(leader) == []  # the first sighting is no event

    leader.applied(runtime, desired)
    with leader.store.db.read() as session:
        since = utcnow() - timedelta(minutes=1)
        assert repo.contacts_since(session, since, not_reported_by=leader.writer.sightings.writer) == []
    assert leader.run_pass()[runtime] == {"Connected": "True", "Synced": "True", "Ready": "True"}
    assert condition_events(leader) == ["SyncedTrue", "ReadyTrue"]
    assert ("DesiredStateApplied", "runtime/rt") in leader.events()


def test_a_report_another_process_wrote_reaches_the_leader_from_the_database(leader: Leader) -> None:
    runtime = leader.store.runtime("rt", env="prod")
    desired = leader.desired_hash(runtime)
    leader.applied(runtime, None)
    leader.run_pass()
    leader.applied(runtime, desired, by=leader.other)
    assert leader.run_pass()[runtime]["Synced"] == "True"
    leader.applied(runtime, "0" * 64)  # back to this process: its report is newer than the row it read
    assert leader.run_pass()[runtime]["Synced"] == "False"
    assert condition_events(leader) == ["SyncedTrue", "ReadyTrue", "SyncedFalse", "ReadyFalse"]


def test_the_leader_tells_of_reports_only_other_processes_wrote(leader: Leader) -> None:
    """Provisioning waits for an agent's first report on the leader: one another worker or replica wrote
    reaches it through the pass (`reported_elsewhere`); this process's own come from its status writer."""
    first, second = leader.store.runtime("rt", env="prod"), leader.store.runtime("rt2", env="prod")
    leader.run_pass()
    leader.applied(first, None)
    leader.applied(second, None, by=leader.other)
    leader.run_pass()
    assert leader.watch.reported_elsewhere == [second]
    leader.watch.reported_elsewhere.clear()
    leader.applied(first, None, by=leader.other)  # a report of a runtime the leader knew, written elsewhere
    leader.applied(second, None)
    leader.run_pass()
    assert leader.watch.reported_elsewhere == [first]


def test_heartbeats_and_long_polls_keep_a_runtime_connected_and_silence_disconnects_it(
    leader: Leader,
) -> None:
    runtime = leader.store.runtime("rt", env="prod")
    desired = leader.desired_hash(runtime)
    leader.applied(runtime, desired)
    start = utcnow()
    leader.run_pass(start)
    leader.applied(runtime, desired)  # a heartbeat: the same report again
    polled = leader.touch(runtime)  # a long-poll
    leader.run_pass(utcnow())
    assert leader.watch.observed[runtime].last_seen == polled
    limit = timedelta(seconds=3.0 * 10.0)
    assert leader.run_pass(utcnow() + limit - timedelta(seconds=1))[runtime]["Connected"] == "True"
    assert condition_events(leader) == []
    silent = leader.run_pass(utcnow() + limit + timedelta(seconds=1))
    assert silent[runtime] == {"Connected": "False", "Synced": "True", "Ready": "True"}
    assert condition_events(leader) == ["ConnectedFalse"]
    leader.applied(runtime, desired)
    assert leader.run_pass()[runtime]["Connected"] == "True"
    assert condition_events(leader) == ["ConnectedFalse", "ConnectedTrue"]


def test_a_heartbeat_changes_nothing_but_a_changed_report_with_the_same_hash_is_evaluated(
    leader: Leader,
) -> None:
    runtime = leader.store.runtime("rt", env="prod")
    desired = leader.desired_hash(runtime)
    leader.applied(runtime, desired)
    leader.run_pass()
    body = StatusReport(
        applied_hash=desired, resources=[ResourceResult(name="web", state="failed", message="refused")]
    )
    leader.report(runtime, body)
    assert leader.run_pass()[runtime]["Ready"] == "False"
    assert condition_events(leader) == ["ReadyFalse"]


def test_contacts_keep_one_heartbeat_deadline_per_runtime_which_still_disconnects_it(leader: Leader) -> None:
    """A watch stream's contact every 15 s moves the deadline on; the leader keeps one deadline per runtime
    (moved when it comes up), not one per contact, and silence still disconnects at the latest one."""
    runtime = leader.store.runtime("rt", env="prod")
    desired = leader.desired_hash(runtime)
    leader.applied(runtime, desired)
    leader.run_pass()
    for _ in range(5):
        leader.touch(runtime)
        leader.run_pass()
    assert len(leader.watch._due) == 1
    last = leader.touch(runtime)
    leader.run_pass()
    limit = timedelta(seconds=3.0 * 10.0)
    assert leader.run_pass(last + limit - timedelta(seconds=1))[runtime]["Connected"] == "True"
    assert len(leader.watch._due) == 1
    assert leader.run_pass(last + limit + timedelta(seconds=1))[runtime]["Connected"] == "False"
    assert condition_events(leader) == ["ConnectedFalse"]


def test_a_contact_of_a_connected_runtime_keeps_its_conditions_without_evaluating_them_again(
    leader: Leader,
) -> None:
    runtime = leader.store.runtime("rt", env="prod")
    leader.applied(runtime, leader.desired_hash(runtime))
    leader.run_pass()
    before = leader.watch.evaluated[runtime]
    leader.touch(runtime)
    assert leader.run_pass()[runtime]["Connected"] == "True"
    after = leader.watch.evaluated[runtime]
    assert after.observed is not before.observed and after.recheck_at > before.recheck_at
    assert after.conditions is before.conditions
