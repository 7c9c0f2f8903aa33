"""What the admin API shows of rollouts and rollout policies.

A rollout's view has its waves in order, each with its runtimes and how each is doing: `pending` (its
wave has not started), `updating`, `ready` or `failed` (with the message that made it count), judged the
way the controller judges them. Once a rollout has ended other than by success, the runtimes of its
started waves show that end (`rolled-back`, `aborted`, `superseded`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from rrm.core import rollouts as core
from rrm.core.rollouts import Health, policy_name_of
from rrm.server.fleet import Fleet
from rrm.server.rollouts.controller import rollout_health
from rrm.server.rollouts.records import policy_of, progress_of, waves_of
from rrm.store import repositories as repo
from rrm.store import rollouts as rollout_repo
from rrm.store.tables import Rollout, RolloutPolicyRow


def rollout_views(
    session: Session, fleet: Fleet, rows: Sequence[Rollout], now: datetime, grace: float
) -> list[dict[str, Any]]:
    concerned = [r for row in rows for wave in waves_of(row) for r in wave.runtimes]
    statuses = repo.statuses_for(session, sorted(set(concerned))) if concerned else {}
    names = {r.id: r.name for r in repo.all_runtimes(session)}
    return [_view(row, fleet, statuses, names, now, grace) for row in rows]


def rollout_list(session: Session, fleet: Fleet, now: datetime, grace: float) -> list[dict[str, Any]]:
    """The newest rollout of every component, without the per-runtime detail."""
    views = rollout_views(session, fleet, rollout_repo.latest_rollouts(session), now, grace)
    for view in views:
        for wave in view["waves"]:
            wave.pop("runtimes")
    return views


def rollout_detail(
    session: Session, fleet: Fleet, component: str, now: datetime, grace: float
) -> dict[str, Any] | None:
    row = rollout_repo.latest_rollout(session, component)
    return None if row is None else rollout_views(session, fleet, [row], now, grace)[0]


def _view(
    row: Rollout,
    fleet: Fleet,
    statuses: Mapping[str, Any],
    names: Mapping[str, str],
    now: datetime,
    grace: float,
) -> dict[str, Any]:
    waves, progress, policy = waves_of(row), progress_of(row), policy_of(row)
    started = core.started_runtimes(waves, progress.started)
    health: dict[str, Health] = {}
    if progress.active:
        health = rollout_health(fleet, row.component, started, statuses, now, grace)
    wave_views = [
        _wave_view(row, index, wave, progress, health, fleet, names) for index, wave in enumerate(waves)
    ]
    runtimes = [r for w in wave_views for r in w["runtimes"]]
    bake_remaining = None
    if progress.state == core.PROGRESSING and progress.ready_since is not None:
        baked = (now - progress.ready_since).total_seconds()
        bake_remaining = round(max(0.0, policy.min_success_seconds - baked), 1)
    deadline_at = None
    if progress.state == core.PROGRESSING and progress.deadline_from is not None:
        deadline_at = progress.deadline_from + timedelta(seconds=policy.progress_deadline_seconds)
    total = sum(len(w.runtimes) for w in waves)
    return {
        "id": row.id,
        "component": row.component,
        "state": row.state,
        "message": row.message,
        "from_revision": row.from_revision,
        "to_revision": row.to_revision,
        "policy": row.policy_name,
        "policy_spec": row.policy,
        "targets": total,
        "updated": len(started),
        "ready": sum(1 for r in runtimes if r["state"] == core.READY),
        "failed": len(progress.failures),
        "max_failures": {"spec": str(policy.max_failures), "allowed": policy.max_failures.of(total)},
        "current_wave": progress.started,
        "wave_count": len(waves),
        "bake": {
            "min_success_time": core.format_duration(policy.min_success_seconds),
            "ready_since": _iso(progress.ready_since),
            "remaining_seconds": bake_remaining,
        },
        "deadline": {
            "progress_deadline": core.format_duration(policy.progress_deadline_seconds),
            "at": _iso(deadline_at),
        },
        "waves": wave_views,
        "failures": [
            {"runtime": names.get(r, r), "message": m} for r, m in sorted(progress.failures.items())
        ],
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "finished_at": _iso(row.finished_at),
    }


def _wave_view(
    row: Rollout,
    index: int,
    wave: core.Wave,
    progress: core.Progress,
    health: Mapping[str, Health],
    fleet: Fleet,
    names: Mapping[str, str],
) -> dict[str, Any]:
    is_started = index < progress.started
    runtimes = []
    for runtime_id in wave.runtimes:
        if runtime_id in progress.failures:
            state, message = core.FAILED, progress.failures[runtime_id]
        elif not is_started:
            state, message = core.PENDING, "its wave has not started"
        elif progress.active:
            seen = health.get(runtime_id)
            state, message = (seen.state, seen.message) if seen else ("gone", "the runtime was deleted")
        elif progress.state == core.SUCCEEDED:
            state, message = core.READY, "the rollout succeeded"
        else:
            state, message = progress.state, progress.message
        runtimes.append(
            {
                "id": runtime_id,
                "name": names.get(runtime_id, runtime_id),
                "state": state,
                "message": message,
                "revision": _delivered_revision(fleet, runtime_id, row.component),
            }
        )
    return {
        "number": index + 1,
        "group": wave.group,
        "state": _wave_state(index, progress),
        "started_at": _iso(progress.wave_starts[index]) if is_started else None,
        "total": len(wave.runtimes),
        "ready": sum(1 for r in runtimes if r["state"] == core.READY),
        "failed": sum(1 for r in runtimes if r["state"] == core.FAILED),
        "runtimes": runtimes,
    }


def _wave_state(index: int, progress: core.Progress) -> str:
    """pending, updating, baking, paused, done, skipped (promoted past it), or how the rollout ended."""
    current = progress.started - 1
    if index > current:
        return "skipped" if progress.state == core.SUCCEEDED else core.PENDING
    if index < current or progress.state == core.SUCCEEDED:
        return "done"
    if progress.state == core.PROGRESSING:
        return "baking" if progress.ready_since is not None else core.UPDATING
    return progress.state


def _delivered_revision(fleet: Fleet, runtime_id: str, component: str) -> int | None:
    delivery = fleet.delivery(runtime_id)
    if delivery is None:
        return None
    return next((revision for name, revision, _ in delivery.components if name == component), None)


def policy_views(session: Session, rows: Sequence[RolloutPolicyRow]) -> list[dict[str, Any]]:
    users: dict[str, list[str]] = {}
    for component in repo.all_components(session):
        name = policy_name_of(component.manifest)
        if name:
            users.setdefault(name, []).append(component.name)
    return [
        {
            "name": row.name,
            "spec": row.spec,
            "used_by": sorted(users.get(row.name, [])),
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at),
        }
        for row in rows
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
