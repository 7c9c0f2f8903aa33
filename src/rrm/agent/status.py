"""The status report: what was applied, per resource (judged against the sidecar by `rrm.agent.loading`)."""

from __future__ import annotations

from collections.abc import Iterable

import rrm
from rrm.wire.protocol import DriftRecord, ReloadResult, ResourceResult, SidecarReport, StatusReport


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
        resources=list(resources),
        sidecar=sidecar,
        reload=reload,
        drift=list(drift),
        agent_version=rrm.__version__,
        target=target,
        heartbeat_interval=heartbeat_interval,
        message=message,
    )
