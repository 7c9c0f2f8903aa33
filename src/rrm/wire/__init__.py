"""The agent protocol: the only models the control plane and the agents share on the wire.

The server and the agent never import each other; they meet here (and in `rrm.core`, `rrm.dapr`).
`rrm.wire.models` defines the protocol with pydantic, for the control plane and the API docs; `rrm.wire.plain`
is the agents' side of it, without pydantic. The names below are the models, imported on first use, so that
an agent importing `rrm.wire.plain` or `rrm.wire.agent_auth` does not load pydantic with this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        RotateChallenge,
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
    "RotateChallenge",
    "RotateRequest",
    "RotateResponse",
    "RuntimeKind",
    "SidecarReport",
    "StatusReport",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("rrm.wire.models"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
