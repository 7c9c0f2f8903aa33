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
        return Condition("Synced", "False", "NothingApplied", "the agent has applied no desired state yet")
    if observed.applied_hash != desired_hash:
        return Condition(
            "Synced",
            "False",
            "OutOfDate",
            f"applied {observed.applied_hash[:12]}, desired {desired_hash[:12]}",
        )
    return Condition("Synced", "True", "UpToDate", f"applied {desired_hash[:12]}")


def ready(observed: Observed | None, desired_hash: str, desired_components: Sequence[str]) -> Condition:
    """Synced, every component applied, and — when the agent can see the sidecar — loaded by it."""
    sync = synced(observed, desired_hash)
    if sync.status != "True" or observed is None:
        return Condition("Ready", "False", "NotSynced", sync.message)
    results = {
        r.get("name"): r
        for r in observed.report.get("resources", [])
        if r.get("kind", "Component") == "Component"
    }
    failed = [f"{n}: {r.get('message', '')}" for n, r in results.items() if r.get("state") == "failed"]
    if failed:
        return Condition("Ready", "False", "ApplyFailed", "; ".join(sorted(failed)))
    sidecar = observed.report.get("sidecar")
    if sidecar:
        if not sidecar.get("reachable"):
            return Condition(
                "Ready", "False", "SidecarUnreachable", sidecar.get("error") or "sidecar not reachable"
            )
        loaded = {c.get("name") for c in sidecar.get("components", [])}
        missing = sorted(set(desired_components) - loaded)
        if missing:
            return Condition("Ready", "False", "NotLoaded", "sidecar has not loaded: " + ", ".join(missing))
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
