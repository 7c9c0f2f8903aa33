"""Singleton work, on the one process that holds leadership: record condition transitions (a runtime going
silent, becoming Ready) as events, drop pairing tokens that can no longer be used, and step the progressive
rollouts (`rrm.server.rollouts.controller`). The leader also publishes the condition counts as metrics."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from rrm.core.conditions import Condition, Observed, evaluate
from rrm.server.fleet import Delivery
from rrm.server.metrics import LEADER, RUNTIMES
from rrm.server.rollouts.controller import run_rollouts
from rrm.server.state import ServerState, utcnow
from rrm.store import repositories as repo
from rrm.store.leadership import Leadership

log = logging.getLogger("rrm.server.housekeeping")
# Used or expired pairing tokens are useless but harmless: dropping them once a minute is soon enough, and
# spares the leader a write transaction every second when nothing else changed.
TOKEN_CLEANUP_INTERVAL = timedelta(seconds=60)


class ConditionWatch:
    """The leader's memory of the fleet's conditions, so a pass costs work proportional to what changed.

    Status rows are re-read only when their `last_seen` moved since the previous pass (with a margin for
    commits still in flight and for clocks of other replicas); conditions are evaluated in memory; only
    changed transitions are written. Everything is reloaded when this process (re)gains leadership.
    """

    MARGIN = timedelta(seconds=10)

    def __init__(self) -> None:
        self.observed: dict[str, Observed] = {}
        self.recorded: dict[tuple[str, str], str] | None = None
        self.watermark: datetime | None = None
        self.tokens_cleaned: datetime | None = None
        self.evaluated: dict[str, _Evaluated] = {}

    def reset(self) -> None:
        self.observed, self.recorded, self.watermark, self.tokens_cleaned = {}, None, None, None
        self.evaluated = {}

    def refresh(self, session: Session, now: datetime) -> None:
        since = None if self.watermark is None else self.watermark - self.MARGIN
        contacts = repo.contacts_since(session, since)
        # a long-poll moves only `last_seen`: the stored report is decoded again only when a new one came
        stale = [
            c.runtime_id
            for c in contacts
            if c.runtime_id not in self.observed
            or since is None
            or c.reported_at is None
            or c.reported_at >= since
        ]
        reports = repo.reports_of(session, stale) if stale else {}
        for c in contacts:
            known = self.observed.get(c.runtime_id)
            if known is not None and c.runtime_id not in reports and known.last_seen == c.last_seen:
                continue  # re-read within the margin, unchanged: keep the object, so nothing is re-evaluated
            report = reports.get(c.runtime_id, known.report if known else {})
            self.observed[c.runtime_id] = Observed(c.last_seen, c.heartbeat_interval, c.applied_hash, report)
        self.watermark = now
        if self.recorded is None:
            self.recorded = {
                (runtime_id, type_): status
                for runtime_id, per_type in repo.condition_transitions(session).items()
                for type_, (status, _) in per_type.items()
            }

    def evaluate(self, state: ServerState, now: datetime) -> tuple[dict[str, list[Condition]], list[str]]:
        """Every runtime's conditions, and the runtimes evaluated anew: those whose report or desired state
        changed, or whose heartbeat deadline passed. The others keep what they had (only the ages in the
        messages would differ, and nothing here records those)."""
        grace = state.settings.heartbeat_grace
        fleet = state.fleet
        for runtime_id in [r for r in self.observed if r not in fleet.runtimes]:
            del self.observed[runtime_id]
        for runtime_id in [r for r in self.evaluated if r not in fleet.runtimes]:
            del self.evaluated[runtime_id]
        fresh = []
        for runtime_id in fleet.runtimes:
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
            desired_hash = delivery.hash if delivery else ""
            names = [c[0] for c in delivery.components] if delivery else []
            conditions = evaluate(observed, desired_hash, names, now, grace)
            recheck_at = _recheck_at(observed, conditions, grace)
            self.evaluated[runtime_id] = _Evaluated(observed, delivery, recheck_at, conditions)
            fresh.append(runtime_id)
        return {r: e.conditions for r, e in self.evaluated.items()}, fresh


@dataclass(frozen=True)
class _Evaluated:
    observed: Observed | None
    delivery: Delivery | None
    recheck_at: datetime  # when Connected turns False if nothing is heard before
    conditions: list[Condition]


def _recheck_at(observed: Observed | None, conditions: list[Condition], grace: float) -> datetime:
    """While connected: when the heartbeat deadline passes. Otherwise only a new report changes anything."""
    still_connected = any(c.type == "Connected" and c.status == "True" for c in conditions)
    if observed is None or observed.last_seen is None or not still_connected:
        return datetime.max.replace(tzinfo=UTC)
    return observed.last_seen + timedelta(seconds=grace * observed.heartbeat_interval)


def publish_metrics(conditions: dict[str, list[Condition]]) -> None:
    counts: Counter[tuple[str, str]] = Counter(
        (c.type, c.status) for per_runtime in conditions.values() for c in per_runtime
    )
    RUNTIMES.clear()
    for (type_, status), count in counts.items():
        RUNTIMES.labels(type_, status).set(count)


def record_transitions(
    state: ServerState,
    watch: ConditionWatch,
    conditions: dict[str, list[Condition]],
    fresh: list[str],
    now: datetime,
) -> None:
    """Persist what changed since the last pass, one event per change; the first sighting is no event."""
    assert watch.recorded is not None
    changed = [
        (runtime_id, condition)
        for runtime_id in fresh
        for condition in conditions[runtime_id]
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
        conditions, fresh = watch.evaluate(state, now)
        publish_metrics(conditions)
        record_transitions(state, watch, conditions, fresh, now)
    return run_rollouts(state.db, state.fleet, state.settings.heartbeat_grace, leading, utcnow())


async def run_housekeeping(state: ServerState, leadership: Leadership, interval: float = 1.0) -> None:
    watch = ConditionWatch()
    try:
        while True:
            try:
                if await asyncio.to_thread(housekeeping_pass, state, leadership, watch):
                    state.fleet.nudge()
            except Exception:
                log.exception("housekeeping pass failed")
            await asyncio.sleep(interval)
    finally:
        leadership.release()
