"""The status report: what was applied, per resource, cross-checked with what the sidecar really loaded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import rrm
from rrm.wire.plain import DriftRecord, ReloadResult, ResourceResult, SidecarReport, StatusReport

NOT_LOADED_MESSAGE = "written, but the sidecar does not list it as loaded (yet)"


def mark_unloaded(resources: Iterable[ResourceResult], sidecar: SidecarReport | None) -> list[ResourceResult]:
    """A component counts as loaded only if daprd lists it; applied but unlisted ones become pending."""
    if sidecar is None or not sidecar.reachable:
        return list(resources)
    loaded = {component.name for component in sidecar.components}
    return [
        replace(r, state="pending", message=NOT_LOADED_MESSAGE)
        if r.state == "applied" and r.kind == "Component" and r.name not in loaded
        else r
        for r in resources
    ]


def build_status_report(
    *,
    applied_hash: str | None,
    resources: Iterable[ResourceResult],
    sidecar: SidecarReport | None,
    reload: ReloadResult | None,
    drift: Iterable[DriftRecord],
    target: str,
    heartbeat_interval: float,
    message: str = "",
) -> StatusReport:
    return StatusReport(
        applied_hash=applied_hash,
        resources=mark_unloaded(resources, sidecar),
        sidecar=sidecar,
        reload=reload,
        drift=list(drift),
        agent_version=rrm.__version__,
        target=target,
        heartbeat_interval=heartbeat_interval,
        message=message,
    )
