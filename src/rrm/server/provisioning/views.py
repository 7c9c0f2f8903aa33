"""How environments and their operations read in the API: secret parameters by name only, every stage with
its state, attempts, timings, deadline, last error and description."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rrm.server.state import ServerState
from rrm.store import provisioning as store
from rrm.store import repositories as repo
from rrm.store.tables import EnvironmentRow, OperationRow, OperationStageRow

RECENT_EVENTS = 30


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def operation_view(row: OperationRow, stages: Sequence[OperationStageRow] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "type": row.type,
        "state": row.state,
        "description": row.description,
        "lastError": row.last_error,
        "leftBehind": list(row.left_behind),
        "createdAt": _iso(row.created_at),
        "updatedAt": _iso(row.updated_at),
        "finishedAt": _iso(row.finished_at),
        "deadlineAt": _iso(row.deadline_at),
    }
    if stages is not None:
        view["stages"] = [stage_view(s) for s in stages]
    return view


def stage_view(row: OperationStageRow) -> dict[str, Any]:
    seconds = None
    if row.started_at is not None and row.finished_at is not None:
        seconds = round((row.finished_at - row.started_at).total_seconds(), 3)
    return {
        "name": row.name,
        "state": row.state,
        "bestEffort": row.best_effort,
        "attempts": row.attempts,
        "startedAt": _iso(row.started_at),
        "finishedAt": _iso(row.finished_at),
        "seconds": seconds,
        "deadlineAt": _iso(row.deadline_at),
        "nextAttemptAt": _iso(row.next_attempt_at),
        "lastError": row.last_error,
        "description": row.description,
    }


def environment_view(
    state: ServerState, row: EnvironmentRow, operations: Sequence[OperationRow]
) -> dict[str, Any]:
    latest = operations[-1] if operations else None
    return {
        "id": row.id,
        "name": row.name,
        "plan": row.plan,
        "region": row.region,
        "labels": dict(row.labels),
        "parameters": dict(row.parameters),
        "secretParameters": _secret_names(state, row),
        "tenant": {"globalAccount": row.global_account, "subaccount": row.subaccount},
        "platform": row.data.get("platform"),  # the OSB platform that ordered it (Environment Broker)
        "state": row.state,
        "runtime": row.name if row.runtime_id else None,
        "resources": _resources(state, row),
        "createdAt": _iso(row.created_at),
        "updatedAt": _iso(row.updated_at),
        "archivedAt": _iso(row.archived_at),
        "operation": None if latest is None else operation_view(latest),
    }


def environment_detail(state: ServerState, session: Session, row: EnvironmentRow) -> dict[str, Any]:
    operations = store.operations_of(session, [row.id])[row.id]
    stages = store.stage_rows(session, [o.id for o in operations])
    events = repo.recent_events(session, f"environment/{row.name}", RECENT_EVENTS)
    return {
        **environment_view(state, row, operations),
        "operations": [operation_view(o, stages[o.id]) for o in operations],
        "events": [{"time": _iso(e.time), "type": e.type, "message": e.message} for e in events],
    }


def _secret_names(state: ServerState, row: EnvironmentRow) -> list[str]:
    """The names of the secret parameters given (never their values)."""
    engine = state.provisioning
    plan = engine.catalog.plans.get(row.plan) if engine is not None else None
    if plan is None or row.sealed is None:
        return []
    return sorted(plan.secret)


def _resources(state: ServerState, row: EnvironmentRow) -> dict[str, Any]:
    """What the environment holds outside rrm: the claimed account, the local agent's directory."""
    resources = {k: v for k, v in row.data.items() if k in ("account",)}
    engine = state.provisioning
    plan = engine.catalog.plans.get(row.plan) if engine is not None else None
    backend = engine.catalog.backends.get(plan.backend) if engine is not None and plan is not None else None
    directory = getattr(backend, "directory", None)
    if directory is not None and row.archived_at is None:
        resources["directory"] = str(directory(row.name))
    return resources
