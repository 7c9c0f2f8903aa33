"""The rollout controller: singleton work, run by the leader on every housekeeping pass.

For each progressing rollout it judges the runtimes of the started waves from their last status reports
and the fleet's desired states, steps the rollout (`rrm.core.rollouts.step`) and stores what changed.
Everything it needs is in the database, so a restarted or newly elected leader resumes where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from rrm.core import rollouts as core
from rrm.core.rollouts import Health, runtime_health, started_runtimes
from rrm.server.fleet import Fleet
from rrm.server.metrics import ROLLOUTS
from rrm.server.rollouts.lifecycle import settle
from rrm.server.rollouts.records import assignment_of, policy_of, progress_of, waves_of
from rrm.server.views import observed_of
from rrm.store import Database
from rrm.store import repositories as repo
from rrm.store import rollouts as rollout_repo
from rrm.store.tables import Rollout, RuntimeStatus

log = logging.getLogger("rrm.server.rollouts")


def rollout_health(
    fleet: Fleet,
    component: str,
    runtime_ids: Iterable[str],
    statuses: Mapping[str, RuntimeStatus],
    now: datetime,
    grace: float,
) -> dict[str, Health]:
    """How each runtime that still exists is doing with the revision its fleet desired state holds."""
    health = {}
    for runtime_id in runtime_ids:
        if runtime_id not in fleet.runtimes:
            continue
        delivery = fleet.delivery(runtime_id)
        delivered = delivery is not None and any(c[0] == component for c in delivery.components)
        health[runtime_id] = runtime_health(
            observed_of(statuses.get(runtime_id)),
            delivery.hash if delivery else None,
            component,
            delivered,
            now,
            grace,
        )
    return health


def advance_rollouts(db: Database, fleet: Fleet, grace: float, now: datetime) -> bool:
    """Step every progressing rollout once; True when something was stored."""
    with db.read() as session:
        rows = [r for r in rollout_repo.active_rollouts(session) if r.state == core.PROGRESSING]
        concerned = {r for row in rows for r in started_runtimes(waves_of(row), len(row.wave_starts))}
        statuses = repo.statuses_for(session, sorted(concerned)) if concerned else {}
    stored = False
    # runtime names for the events (waves name runtimes not started yet too); only when a rollout progresses
    names = {runtime_id: entry.name for runtime_id, entry in list(fleet.runtimes.items())} if rows else {}
    for row in rows:
        if fleet.rollout_assignment(row.component) != assignment_of(row):
            continue  # this process has not rendered the rollout's latest state yet: judge it next pass
        waves, progress = waves_of(row), progress_of(row)
        health = rollout_health(
            fleet, row.component, started_runtimes(waves, progress.started), statuses, now, grace
        )
        step = core.step(waves, policy_of(row), progress, health, now, names)
        if step.progress == progress and not step.events:
            continue
        stored |= _store_step(db, row, step, now)
    _publish_counts(db)
    return stored


def _publish_counts(db: Database) -> None:
    with db.read() as session:
        counts = rollout_repo.rollout_counts(session)
    ROLLOUTS.clear()
    for state, count in counts.items():
        ROLLOUTS.labels(state).set(count)


def _store_step(db: Database, seen: Rollout, step: core.Step, now: datetime) -> bool:
    with db.write() as session:
        row = session.get(Rollout, seen.id)
        if row is None or row.version != seen.version:
            return False  # an operator (or another leader) changed it meanwhile: judge it again next pass
        settle(session, row, step, now)
    for event in step.events:
        log.info("rollout of %s: %s: %s", seen.component, event.type, event.message)
    return True


def run_rollouts(db: Database, fleet: Fleet, grace: float, leading: bool, now: datetime) -> bool:
    """The housekeeping hook: the leader steps the rollouts, the others publish no rollout counts."""
    if not leading:
        ROLLOUTS.clear()
        return False
    return advance_rollouts(db, fleet, grace, now)
