"""Another name of `rrm.wire.protocol`, kept only while `rrm.agent.loop` still imports it by this name."""

from rrm.wire.protocol import DesiredState, DriftRecord, ReloadResult, SidecarReport, StatusReport

__all__ = ["DesiredState", "DriftRecord", "ReloadResult", "SidecarReport", "StatusReport"]
