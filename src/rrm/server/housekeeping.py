"""Periodic work: turn condition changes (a runtime going silent, becoming Ready) into events and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from rrm.server.metrics import RUNTIMES
from rrm.server.state import ServerState, utcnow
from rrm.server.views import runtime_conditions
from rrm.store import repositories as repo

log = logging.getLogger("rrm.server.housekeeping")


def observe_conditions(state: ServerState) -> None:
    now = utcnow()
    with state.db.write() as session:
        statuses = repo.statuses(session)
        counts: Counter[tuple[str, str]] = Counter()
        for runtime_id, entry in list(state.fleet.runtimes.items()):
            conditions = runtime_conditions(
                state.fleet, runtime_id, statuses.get(runtime_id), now, state.settings.heartbeat_grace
            )
            for condition in conditions:
                counts[(condition.type, condition.status)] += 1
            for changed in state.tracker.observe(runtime_id, conditions, now):
                repo.record_event(
                    session,
                    f"{changed.type}{changed.status}",
                    f"runtime/{entry.name}",
                    f"{changed.reason}: {changed.message}",
                    now,
                )
        state.tracker.forget_missing(set(state.fleet.runtimes))
    RUNTIMES.clear()
    for (type_, status), count in counts.items():
        RUNTIMES.labels(type_, status).set(count)


async def run_housekeeping(state: ServerState, interval: float = 1.0) -> None:
    while True:
        try:
            await asyncio.to_thread(observe_conditions, state)
        except Exception:
            log.exception("housekeeping pass failed")
        await asyncio.sleep(interval)
