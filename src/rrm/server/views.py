"""What the admin API shows about runtimes and components: database rows joined with the fleet's memory."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rrm.core.conditions import Condition, Observed, evaluate
from rrm.core.resources import secret_refs, selector_of
from rrm.server.fleet import Fleet
from rrm.store.tables import Event, Runtime, RuntimeStatus


def observed_of(status: RuntimeStatus | None) -> Observed | None:
    if status is None:
        return None
    return Observed(status.last_seen, status.heartbeat_interval, status.applied_hash, status.report)


def runtime_conditions(
    fleet: Fleet, runtime_id: str, status: RuntimeStatus | None, now: datetime, grace: float
) -> list[Condition]:
    delivery = fleet.delivery(runtime_id)
    desired_hash = delivery.hash if delivery else ""
    names = [c[0] for c in delivery.components] if delivery else []
    return evaluate(observed_of(status), desired_hash, names, now, grace)


def runtime_view(
    fleet: Fleet,
    row: Runtime,
    status: RuntimeStatus | None,
    conditions: list[Condition],
    transitions: Mapping[str, tuple[str, datetime]],
) -> dict[str, Any]:
    delivery = fleet.delivery(row.id)
    return {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "labels": row.labels,
        "conditions": [
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "last_transition": _transition(transitions, c),
            }
            for c in conditions
        ],
        "last_seen": _iso(status.last_seen) if status else None,
        "component_count": len(delivery.components) if delivery else 0,
        "desired_hash": delivery.hash if delivery else None,
        "applied_hash": status.applied_hash if status else None,
        "agent_version": status.agent_version if status else None,
        "paired": fleet.paired(row.id),
    }


def runtime_detail(view: dict[str, Any], fleet: Fleet, status: RuntimeStatus | None) -> dict[str, Any]:
    delivery = fleet.delivery(view["id"])
    report: Mapping[str, Any] = status.report if status else {}
    return {
        **view,
        "resources": report.get("resources", []),
        "sidecar": report.get("sidecar"),
        "reload": report.get("reload"),
        "drift": report.get("drift", []),
        "message": report.get("message", ""),
        "desired_components": [
            {"name": n, "revision": r, "type": t} for n, r, t in (delivery.components if delivery else ())
        ],
    }


def component_view(fleet: Fleet, name: str, ready_runtimes: set[str]) -> dict[str, Any]:
    component = fleet.components[name]
    matched = [rid for rid in fleet.runtimes if _delivers(fleet, rid, name)]
    spec = component.manifest.get("spec", {})
    return {
        "name": name,
        "type": spec.get("type"),
        "version": spec.get("version"),
        "revision": component.revision,
        "selector": selector_of(component.manifest),
        "matched": len(matched),
        "ready": sum(1 for rid in matched if rid in ready_runtimes),
        "secrets": sorted(secret_refs(component.manifest)),
        "runtimes": sorted(
            ({"name": fleet.runtimes[rid].name, "ready": rid in ready_runtimes} for rid in matched),
            key=lambda r: str(r["name"]),
        ),
    }


def event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": event.time.isoformat(),
        "type": event.type,
        "subject": event.subject,
        "message": event.message,
    }


def _delivers(fleet: Fleet, runtime_id: str, component: str) -> bool:
    delivery = fleet.delivery(runtime_id)
    return delivery is not None and any(c[0] == component for c in delivery.components)


def _transition(transitions: Mapping[str, tuple[str, datetime]], condition: Condition) -> str | None:
    known = transitions.get(condition.type)
    return _iso(known[1]) if known and known[0] == condition.status else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
