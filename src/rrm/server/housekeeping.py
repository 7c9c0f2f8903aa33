"""Singleton work, on the one process that holds leadership: record condition transitions (a runtime going
silent, becoming Ready) as events, drop pairing tokens that can no longer be used, and step the progressive
rollouts (`rrm.server.rollouts.controller`). Every process publishes the condition counts as metrics."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime

from rrm.core.conditions import Condition
from rrm.server.metrics import LEADER, RUNTIMES
from rrm.server.rollouts.controller import run_rollouts
from rrm.server.state import ServerState, utcnow
from rrm.server.views import runtime_conditions
from rrm.store import repositories as repo
from rrm.store.leadership import Leadership

log = logging.getLogger("rrm.server.housekeeping")


def current_conditions(state: ServerState, now: datetime) -> dict[str, list[Condition]]:
    with state.db.read() as session:
        statuses = repo.statuses(session)
    grace = state.settings.heartbeat_grace
    return {
        runtime_id: runtime_conditions(state.fleet, runtime_id, statuses.get(runtime_id), now, grace)
        for runtime_id in list(state.fleet.runtimes)
    }


def publish_metrics(conditions: dict[str, list[Condition]]) -> None:
    counts: Counter[tuple[str, str]] = Counter(
        (c.type, c.status) for per_runtime in conditions.values() for c in per_runtime
    )
    RUNTIMES.clear()
    for (type_, status), count in counts.items():
        RUNTIMES.labels(type_, status).set(count)


def record_transitions(state: ServerState, conditions: dict[str, list[Condition]], now: datetime) -> None:
    """Persist what changed since the last pass, one event per change; the first sighting is no event."""
    with state.db.write() as session:
        known = repo.condition_transitions(session)
        for runtime_id, per_runtime in conditions.items():
            entry = state.fleet.runtimes.get(runtime_id)
            for condition in per_runtime:
                previous = known.get(runtime_id, {}).get(condition.type)
                if previous is not None and previous[0] == condition.status:
                    continue
                repo.save_condition(session, runtime_id, condition.type, condition.status, now)
                if previous is not None and entry is not None:
                    repo.record_event(
                        session,
                        f"{condition.type}{condition.status}",
                        f"runtime/{entry.name}",
                        f"{condition.reason}: {condition.message}",
                        now,
                    )
        repo.delete_expired_pairing_tokens(session, now)


def housekeeping_pass(state: ServerState, leadership: Leadership) -> bool:
    """True when the pass changed what runtimes should run (a rollout moved), so the fleet catches up now."""
    now = utcnow()
    conditions = current_conditions(state, now)
    publish_metrics(conditions)
    leading = leadership.try_acquire()
    LEADER.set(1 if leading else 0)
    if leading:
        record_transitions(state, conditions, now)
    return run_rollouts(state.db, state.fleet, state.settings.heartbeat_grace, leading, utcnow())


async def run_housekeeping(state: ServerState, leadership: Leadership, interval: float = 1.0) -> None:
    try:
        while True:
            try:
                if await asyncio.to_thread(housekeeping_pass, state, leadership):
                    state.fleet.nudge()
            except Exception:
                log.exception("housekeeping pass failed")
            await asyncio.sleep(interval)
    finally:
        leadership.release()
