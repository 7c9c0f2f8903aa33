"""Singleton work, on the one process that holds leadership: record condition transitions (a runtime going
silent, becoming Ready) as events, drop pairing tokens that can no longer be used, and step the progressive
rollouts (`rrm.server.rollouts.controller`). The leader also publishes the condition counts as metrics."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from rrm.core.conditions import Condition, Observed, connected, evaluate
from rrm.server.fleet import Delivery
from rrm.server.memory import release_free_memory
from rrm.server.metrics import LEADER, RUNTIMES
from rrm.server.rollouts.controller import run_rollouts
from rrm.server.state import ServerState, utcnow
from rrm.server.status_writer import Sighting, Sightings
from rrm.store import repositories as repo
from rrm.store.leadership import Leadership

log = logging.getLogger("rrm.server.housekeeping")
# Used or expired pairing tokens are useless but harmless: dropping them once a minute is soon enough, and
# spares the leader a write transaction every second when nothing else changed.
TOKEN_CLEANUP_INTERVAL = timedelta(seconds=60)
# What the status writer remembers of a deleted runtime (its last report) is dropped within this time.
FORGET_INTERVAL = timedelta(seconds=60)


class ConditionWatch:
    """The leader's memory of the fleet's conditions, so a pass costs work proportional to what changed.

    What this process's StatusWriter wrote comes in memory (`Sightings`); from the database only the
    status rows whose last report another process wrote are read, and only when their `last_seen` moved
    since the previous pass (with a margin for commits still in flight and for clocks of other replicas).
    Conditions are evaluated in memory; only changed transitions are written. Everything is reloaded when
    this process (re)gains leadership.
    """

    MARGIN = timedelta(seconds=10)

    def __init__(self, sightings: Sightings) -> None:
        self.sightings = sightings
        self.reset()

    def reset(self) -> None:
        self.sightings.take()  # what was written while another process led is in the database
        self.observed: dict[str, Observed] = {}
        self.recorded: dict[tuple[str, str], str] | None = None
        self.watermark: datetime | None = None
        self.tokens_cleaned: datetime | None = None
        self.evaluated: dict[str, _Evaluated] = {}
        self.counts: Counter[tuple[str, str]] = Counter()  # (type, status) → runtimes, for the metrics
        self._heard: set[str] = set()  # runtimes with a new report or contact since the last evaluation
        # heap: when a runtime's heartbeat deadline passes, one entry per runtime (`_due_at`), moved on only
        # when it comes up; a contact every few seconds then costs no entry of its own
        self._due: list[tuple[datetime, str]] = []
        self._due_at: dict[str, datetime] = {}  # runtime id → its entry in `_due` that counts
        self._deliveries_seen = -1  # Fleet.deliveries_version at the last evaluation
        self._reported_at: dict[str, datetime | None] = {}  # the report in `observed` is the one of then
        self.reported_elsewhere: list[str] = []  # runtimes with a report read from the database, until taken

    def refresh(self, session: Session, now: datetime) -> None:
        # in memory first: a row read afterwards holds a report at least as new as the ones taken here
        for runtime_id, sighting in self.sightings.take().items():
            self._sighted(runtime_id, sighting)
        since = None if self.watermark is None else self.watermark - self.MARGIN
        others = None if since is None else self.sightings.writer
        contacts = repo.contacts_since(session, since, not_reported_by=others)
        # a long-poll moves only `last_seen`: a report is decoded once, when a new one came
        stale = [
            c.runtime_id
            for c in contacts
            if c.runtime_id not in self.observed
            or c.reported_at is None
            or c.reported_at != self._reported_at.get(c.runtime_id)
        ]
        reports = repo.reports_of(session, stale) if stale else {}
        for c in contacts:
            known = self.observed.get(c.runtime_id)
            if known is None:
                report = reports.get(c.runtime_id, {})  # {}: deleted meanwhile (PostgreSQL reads anew)
                if report:
                    self.reported_elsewhere.append(c.runtime_id)
                observed = Observed(c.last_seen, c.heartbeat_interval, c.applied_hash, report)
            elif c.runtime_id in reports:
                self.reported_elsewhere.append(c.runtime_id)
                last_seen = _later(known.last_seen, c.last_seen)
                observed = Observed(last_seen, c.heartbeat_interval, c.applied_hash, reports[c.runtime_id])
            elif known.last_seen is None or c.last_seen > known.last_seen:
                observed = replace(known, last_seen=c.last_seen)
            else:
                continue  # re-read within the margin, or older: keep the object, so nothing is re-evaluated
            self._reported_at[c.runtime_id] = c.reported_at
            self.observed[c.runtime_id] = observed
            self._heard.add(c.runtime_id)
        self.watermark = now
        if self.recorded is None:
            self.recorded = {
                (runtime_id, type_): status
                for runtime_id, per_type in repo.condition_transitions(session).items()
                for type_, (status, _) in per_type.items()
            }

    def _sighted(self, runtime_id: str, sighting: Sighting) -> None:
        """What this process wrote of the runtime: a new report, or a contact of a runtime already known
        (one that never reported has no status row the contact could have moved)."""
        known = self.observed.get(runtime_id)
        last_seen = _later(known.last_seen if known else None, sighting.last_seen)
        new = sighting.observed
        if new is not None:
            self.observed[runtime_id] = Observed(
                last_seen, new.heartbeat_interval, new.applied_hash, new.report
            )
            self._reported_at[runtime_id] = sighting.last_seen
        elif known is not None and last_seen != known.last_seen:
            self.observed[runtime_id] = Observed(
                last_seen, known.heartbeat_interval, known.applied_hash, known.report
            )
        else:
            return
        self._heard.add(runtime_id)

    def evaluate(self, state: ServerState, now: datetime) -> dict[str, list[Condition]]:
        """The conditions of the runtimes evaluated anew: those heard from, those whose heartbeat deadline
        passed, and, after any desired state changed, all whose desired state did. The others keep what
        they had (only the ages in the messages would differ, and nothing here records those)."""
        fleet = state.fleet
        candidates, self._heard = self._heard, set()
        if fleet.deliveries_version != self._deliveries_seen:
            self._deliveries_seen = fleet.deliveries_version
            candidates.update(fleet.runtimes)
            for runtime_id in [r for r in self.evaluated if r not in fleet.runtimes]:
                self.counts.subtract((c.type, c.status) for c in self.evaluated.pop(runtime_id).conditions)
                self.observed.pop(runtime_id, None)
                self._reported_at.pop(runtime_id, None)
            if self.recorded is not None:  # a deleted runtime's condition rows went with it
                for key in [k for k in self.recorded if k[0] not in fleet.runtimes]:
                    del self.recorded[key]
        while self._due and self._due[0][0] <= now:
            due, runtime_id = heapq.heappop(self._due)
            if self._due_at.get(runtime_id) != due:
                continue  # an entry an earlier deadline superseded
            del self._due_at[runtime_id]
            known = self.evaluated.get(runtime_id)
            if known is not None and now < known.recheck_at:  # heard from since: not due yet
                self._schedule(runtime_id, known.recheck_at)
                continue
            candidates.add(runtime_id)
        fresh = {}
        for runtime_id in candidates:
            if runtime_id not in fleet.runtimes:
                continue
            observed = self.observed.get(runtime_id)
            delivery = fleet.delivery(runtime_id)
            known = self.evaluated.get(runtime_id)
            if (
                known is not None
                and known.observed is observed
                and known.delivery is delivery
                and now < known.recheck_at
            ):
                continue
            conditions = _conditions(known, observed, delivery, now, state.settings.heartbeat_grace)
            recheck_at = _recheck_at(observed, conditions, state.settings.heartbeat_grace)
            scheduled = self._due_at.get(runtime_id)
            if scheduled is None or recheck_at < scheduled:
                self._schedule(runtime_id, recheck_at)
            if known is None or (
                conditions is not known.conditions and _statuses(known.conditions) != _statuses(conditions)
            ):
                counts = self.counts  # key by key: Counter.update and subtract loop in Python per call
                if known is not None:
                    for condition in known.conditions:
                        counts[condition.type, condition.status] -= 1
                for condition in conditions:
                    counts[condition.type, condition.status] += 1
            self.evaluated[runtime_id] = _Evaluated(observed, delivery, recheck_at, conditions)
            fresh[runtime_id] = conditions
        return fresh

    def _schedule(self, runtime_id: str, recheck_at: datetime) -> None:
        """The runtime's one deadline in the heap; none while it is not connected (only news changes that)."""
        if recheck_at != NEVER:
            heapq.heappush(self._due, (recheck_at, runtime_id))
            self._due_at[runtime_id] = recheck_at


def _conditions(
    known: _Evaluated | None,
    observed: Observed | None,
    delivery: Delivery | None,
    now: datetime,
    grace: float,
) -> list[Condition]:
    """`evaluate`, but Synced and Ready, which depend only on the report and the desired state, are kept
    from the last evaluation when neither changed: a heartbeat repeats the report it sent before. A runtime
    connected before and heard from again within the limit keeps all three (only the age in Connected's
    message would differ): what a watch stream's keep-alive every 15 s costs the leader."""
    if (
        known is not None
        and known.delivery is delivery
        and known.observed is not None
        and observed is not None
        and known.observed.applied_hash == observed.applied_hash
        and known.observed.report == observed.report
    ):
        if (
            known.conditions[0].status == "True"
            and observed.last_seen is not None
            and (now - observed.last_seen).total_seconds() <= grace * observed.heartbeat_interval
        ):
            return known.conditions
        return [connected(observed, now, grace), *known.conditions[1:]]
    desired_hash = delivery.hash if delivery else ""
    names = [c[0] for c in delivery.components] if delivery else []
    return evaluate(observed, desired_hash, names, now, grace)


@dataclass(frozen=True)
class _Evaluated:
    observed: Observed | None
    delivery: Delivery | None
    recheck_at: datetime  # when Connected turns False if nothing is heard before
    conditions: list[Condition]


NEVER = datetime.max.replace(tzinfo=UTC)


def _statuses(conditions: list[Condition]) -> list[str]:
    return [c.status for c in conditions]


def _later(known: datetime | None, seen: datetime) -> datetime:
    """A runtime seen by several processes was last seen at the latest of their sightings."""
    return seen if known is None or seen > known else known


def _recheck_at(observed: Observed | None, conditions: list[Condition], grace: float) -> datetime:
    """While connected: just after the heartbeat deadline. Otherwise only a new report changes anything."""
    still_connected = any(c.type == "Connected" and c.status == "True" for c in conditions)
    if observed is None or observed.last_seen is None or not still_connected:
        return NEVER
    return observed.last_seen + timedelta(seconds=grace * observed.heartbeat_interval + 0.001)


def publish_metrics(counts: Counter[tuple[str, str]]) -> None:
    RUNTIMES.clear()
    for (type_, status), count in counts.items():
        if count:
            RUNTIMES.labels(type_, status).set(count)


def record_transitions(
    state: ServerState,
    watch: ConditionWatch,
    fresh: dict[str, list[Condition]],
    now: datetime,
) -> None:
    """Persist what changed since the last pass, one event per change; the first sighting is no event."""
    assert watch.recorded is not None
    changed = [
        (runtime_id, condition)
        for runtime_id, conditions in fresh.items()
        for condition in conditions
        if watch.recorded.get((runtime_id, condition.type)) != condition.status
    ]
    events = []
    for runtime_id, condition in changed:
        entry = state.fleet.runtimes.get(runtime_id)
        if (runtime_id, condition.type) in watch.recorded and entry is not None:
            events.append(
                (
                    f"{condition.type}{condition.status}",
                    f"runtime/{entry.name}",
                    f"{condition.reason}: {condition.message}",
                )
            )
    clean_tokens = watch.tokens_cleaned is None or now - watch.tokens_cleaned >= TOKEN_CLEANUP_INTERVAL
    if changed or clean_tokens:
        with state.db.write() as session:
            repo.save_conditions(session, [(r, c.type, c.status) for r, c in changed], now)
            repo.record_events(session, events, now)
            if clean_tokens:
                repo.delete_expired_pairing_tokens(session, now)
        if clean_tokens:
            watch.tokens_cleaned = now
    for runtime_id, condition in changed:
        watch.recorded[(runtime_id, condition.type)] = condition.status


def housekeeping_pass(state: ServerState, leadership: Leadership, watch: ConditionWatch) -> bool:
    """True when the pass changed what runtimes should run (a rollout moved), so the fleet catches up now."""
    now = utcnow()
    leading = leadership.try_acquire()
    LEADER.set(1 if leading else 0)
    if not leading:
        watch.reset()
        RUNTIMES.clear()
    else:
        with state.db.read() as session:
            watch.refresh(session, now)
        fresh = watch.evaluate(state, now)
        publish_metrics(watch.counts)
        record_transitions(state, watch, fresh, now)
    return run_rollouts(state.db, state.fleet, state.settings.heartbeat_grace, leading, utcnow())


def _tell_reported_elsewhere(state: ServerState, watch: ConditionWatch) -> None:
    """Reports another process wrote (`--workers N`, replicas) reach the leader's listener of reports
    (provisioning waiting for an agent) as this process's own do, within a pass. On the event loop."""
    reported, watch.reported_elsewhere = watch.reported_elsewhere, []
    if reported and state.status_writer.on_first_reports is not None:
        state.status_writer.on_first_reports(reported)


async def run_housekeeping(state: ServerState, leadership: Leadership, interval: float = 1.0) -> None:
    """Every process runs it (the leader's share only while it leads); each also makes its status writer
    forget deleted runtimes, and hands the heap's free memory back, once a `FORGET_INTERVAL`."""
    watch = ConditionWatch(state.status_writer.sightings)
    forgotten = time.monotonic()
    try:
        while True:
            try:
                if await asyncio.to_thread(housekeeping_pass, state, leadership, watch):
                    state.fleet.nudge()
                _tell_reported_elsewhere(state, watch)
            except Exception:
                log.exception("housekeeping pass failed")
            if time.monotonic() - forgotten >= FORGET_INTERVAL.total_seconds():
                state.status_writer.forget_all_but(state.fleet.runtimes)
                await asyncio.to_thread(release_free_memory)
                forgotten = time.monotonic()
            await asyncio.sleep(interval)
    finally:
        leadership.release()
