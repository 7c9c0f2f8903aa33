"""What every rrm pod shares: the image, an unprivileged user, and containers that cannot escalate."""

from __future__ import annotations

import copy
from typing import Any

import rrm

DEFAULT_IMAGE = f"rrm:{rrm.__version__}"
USER_ID = 10001
_HARDENED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """No privilege escalation, a read-only root filesystem, no capabilities."""
    return copy.deepcopy(_HARDENED)


def http_probe(
    path: str, port: str, period_seconds: int, failure_threshold: int | None = None
) -> dict[str, Any]:
    """A probe that GETs `path` on the container port named `port`; Kubernetes' own failure threshold
    (3) when `failure_threshold` is None."""
    probe: dict[str, Any] = {"httpGet": {"path": path, "port": port}, "periodSeconds": period_seconds}
    if failure_threshold is not None:
        probe["failureThreshold"] = failure_threshold
    return probe
