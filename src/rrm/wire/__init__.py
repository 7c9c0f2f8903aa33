"""The agent protocol: the only models the control plane and the agents share on the wire.

The server and the agent never import each other; they meet here (and in `rrm.core`, `rrm.dapr`).
"""

from rrm.wire.models import (
    RUNTIME_KINDS,
    DeliveredSecret,
    DesiredState,
    DriftRecord,
    LoadedComponent,
    PairRequest,
    PairResponse,
    ReloadResult,
    ResourceResult,
    RotateRequest,
    RotateResponse,
    RuntimeKind,
    SidecarReport,
    StatusReport,
)

__all__ = [
    "RUNTIME_KINDS",
    "DeliveredSecret",
    "DesiredState",
    "DriftRecord",
    "LoadedComponent",
    "PairRequest",
    "PairResponse",
    "ReloadResult",
    "ResourceResult",
    "RotateRequest",
    "RotateResponse",
    "RuntimeKind",
    "SidecarReport",
    "StatusReport",
]
