"""Runtime conditions, derived from what the agent last reported and what the runtime should run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MISSED_HEARTBEATS = 3


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """The last status report as stored: enough to judge a runtime without asking it."""

    last_seen: datetime | None
    heartbeat_interval: float
    applied_hash: str | None
    report: Mapping[str, Any]


def connected(observed: Observed | None, now: datetime, grace: float = MISSED_HEARTBEATS) -> Condition:
    if observed is None or observed.last_seen is None:
        return Condition("Connected", "False", "NeverConnected", "the agent has not reported yet")
    silent = (now - observed.last_seen).total_seconds()
    limit = grace * observed.heartbeat_interval
    if silent > limit:
        return Condition(
            "Connected", "False", "HeartbeatMissed", f"no heartbeat for {silent:.0f} s (limit {limit:.0f} s)"
        )
    return Condition("Connected", "True", "HeartbeatSeen", f"last heartbeat {silent:.0f} s ago")


def synced(observed: Observed | None, desired_hash: str) -> Condition:
    if observed is None or observed.applied_hash is None:
        message = (observed.report.get("message") if observed else "") or (
            "the agent has applied no desired state yet"
        )
        return Condition("Synced", "False", "NothingApplied", message)
    if observed.applied_hash != desired_hash:
        return Condition(
            "Synced",
            "False",
            "OutOfDate",
            f"applied {observed.applied_hash[:12]}, desired {desired_hash[:12]}",
        )
    return Condition("Synced", "True", "UpToDate", f"applied {desired_hash[:12]}")


def loaded(result: Mapping[str, Any] | None, sidecar: Mapping[str, Any] | None, name: str) -> bool | None:
    """Whether the sidecar has loaded component `name`: the agent's judgement (`loaded`, which checks type
    and version too; None when it cannot tell), else — reports of agents that did not judge — whether the
    reachable sidecar lists the name. None: unknown."""
    if result is not None and "loaded" in result:
        value = result["loaded"]
        return value if isinstance(value, bool) else None
    if not sidecar or not sidecar.get("reachable"):
        return None
    return name in {c.get("name") for c in sidecar.get("components", [])}


def ready(observed: Observed | None, desired_hash: str, desired_components: Sequence[str]) -> Condition:
    """Synced, every component applied, and — when the agent can see the sidecar — loaded by it.

    A component the agent reports failed and not loaded is one the sidecar refused or did not load within
    the agent's load deadline (`NotLoaded`); one applied and not loaded yet is still loading (`Loading`).
    A result for a component that is not desired, reported loaded, is one the sidecar still holds past the
    load deadline after it was removed (`NotUnloaded`)."""
    sync = synced(observed, desired_hash)
    if sync.status != "True" or observed is None:
        return Condition("Ready", "False", "NotSynced", sync.message)
    results = {
        r.get("name"): r
        for r in observed.report.get("resources", [])
        if r.get("kind", "Component") == "Component"
    }
    sidecar = observed.report.get("sidecar")
    load = {name: loaded(results.get(name), sidecar, name) for name in desired_components}
    lingering = {
        n: str(r.get("message", "")) for n, r in results.items() if n not in load and r.get("loaded") is True
    }
    failed = {
        n: str(r.get("message", ""))
        for n, r in results.items()
        if r.get("state") == "failed" and n not in lingering
    }
    apply_failed = [f"{n}: {m}" for n, m in failed.items() if load.get(n) is not False]
    if apply_failed:
        return Condition("Ready", "False", "ApplyFailed", "; ".join(sorted(apply_failed)))
    if sidecar and not sidecar.get("reachable"):
        return Condition(
            "Ready", "False", "SidecarUnreachable", sidecar.get("error") or "sidecar not reachable"
        )
    missing = sorted(n for n, is_loaded in load.items() if is_loaded is False)
    if any(n in failed for n in missing) or any("loaded" not in results.get(n, {}) for n in missing):
        shown = [f"{n} ({failed[n]})" if failed.get(n) else n for n in missing]
        return Condition("Ready", "False", "NotLoaded", "sidecar has not loaded: " + ", ".join(shown))
    if lingering:
        shown = [f"{n} ({m})" if m else n for n, m in sorted(lingering.items())]
        return Condition("Ready", "False", "NotUnloaded", "sidecar has not unloaded: " + ", ".join(shown))
    if missing:
        return Condition(
            "Ready", "False", "Loading", "waiting for the sidecar to load: " + ", ".join(missing)
        )
    if sidecar:
        return Condition(
            "Ready", "True", "Loaded", f"{len(desired_components)} component(s) applied and loaded"
        )
    return Condition("Ready", "True", "Applied", f"{len(desired_components)} component(s) applied")


def evaluate(
    observed: Observed | None,
    desired_hash: str,
    desired_components: Sequence[str],
    now: datetime,
    grace: float = MISSED_HEARTBEATS,
) -> list[Condition]:
    return [
        connected(observed, now, grace),
        synced(observed, desired_hash),
        ready(observed, desired_hash, desired_components),
    ]
