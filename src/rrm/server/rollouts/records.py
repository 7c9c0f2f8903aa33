"""Rollout rows as the pure core's values and back, and what a fleet needs to render an active rollout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rrm.core.resources import StoredComponent
from rrm.core.rollouts import (
    Assignment,
    Progress,
    RolloutPolicy,
    Wave,
    policy_from_spec,
    started_runtimes,
)
from rrm.store import repositories as repo
from rrm.store import rollouts as rollout_repo
from rrm.store.tables import Rollout


def waves_of(row: Rollout) -> tuple[Wave, ...]:
    return tuple(Wave(str(w["group"]), tuple(str(r) for r in w["runtimes"])) for w in row.waves)


def waves_json(waves: Sequence[Wave]) -> list[Any]:
    return [{"group": w.group, "runtimes": list(w.runtimes)} for w in waves]


def policy_of(row: Rollout) -> RolloutPolicy:
    return policy_from_spec(row.policy_name, row.policy)


def progress_of(row: Rollout) -> Progress:
    return Progress(
        state=row.state,
        wave_starts=tuple(datetime.fromisoformat(t) for t in row.wave_starts),
        deadline_from=row.deadline_from,
        ready_since=row.ready_since,
        failures={str(k): str(v) for k, v in row.failures.items()},
        message=row.message,
    )


def assignment_of(row: Rollout) -> Assignment:
    pinned = {str(k): None if v is None else int(v) for k, v in row.pinned.items()}
    started = started_runtimes(waves_of(row), len(row.wave_starts))
    return Assignment(row.from_revision, row.to_revision, started, pinned)


def write_progress(row: Rollout, progress: Progress, now: datetime) -> None:
    """Store `progress` on the row; every write bumps `version`, an end sets `finished_at`."""
    row.state = progress.state
    row.wave_starts = [t.isoformat() for t in progress.wave_starts]
    row.deadline_from = progress.deadline_from
    row.ready_since = progress.ready_since
    row.failures = dict(progress.failures)
    row.message = progress.message
    row.version += 1
    row.updated_at = now
    if not progress.active and row.finished_at is None:
        row.finished_at = now


@dataclass(frozen=True)
class RolloutDelivery:
    """An active rollout as a fleet renders it: who gets which revision, and those revisions' content."""

    assignment: Assignment
    revisions: Mapping[int, StoredComponent]


def delivery_of(session: Session, row: Rollout) -> RolloutDelivery:
    assignment = assignment_of(row)
    revisions = {}
    for revision in sorted(assignment.revisions()):
        stored = repo.component_revision(session, row.component, revision)
        if stored is not None and stored.manifest is not None:
            revisions[revision] = StoredComponent(row.component, revision, stored.manifest)
    return RolloutDelivery(assignment, revisions)


def active_delivery(session: Session, component: str) -> RolloutDelivery | None:
    row = rollout_repo.active_rollout(session, component)
    return None if row is None else delivery_of(session, row)


def active_deliveries(session: Session) -> dict[str, RolloutDelivery]:
    return {row.component: delivery_of(session, row) for row in rollout_repo.active_rollouts(session)}
