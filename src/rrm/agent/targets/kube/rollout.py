"""Whether a Deployment's rollout has completed, by the rules `kubectl rollout status` applies.

kubectl (`k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go`, `DeploymentStatusViewer`) and the
Deployment documentation ("Complete Deployment": all replicas updated and available, no old replicas
running) agree: the controller must have observed the current spec (`status.observedGeneration >=
metadata.generation`); a `Progressing` condition with reason `ProgressDeadlineExceeded` means the rollout
failed; until then it waits for every replica to be updated, the old ones to be gone and every updated one
to be available.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"  # deploymentutil.TimedOutReason


@dataclass(frozen=True)
class RolloutStatus:
    done: bool
    failed: bool
    message: str


def rollout_status(deployment: Mapping[str, Any]) -> RolloutStatus:
    """The state of a Deployment's rollout, worded as kubectl words it."""
    metadata = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    name = metadata.get("name")
    if int(metadata.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return RolloutStatus(False, False, "Waiting for deployment spec update to be observed...")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
            return RolloutStatus(False, True, f'deployment "{name}" exceeded its progress deadline')
    wanted = (deployment.get("spec") or {}).get("replicas")
    wanted = 1 if wanted is None else int(wanted)  # the API server defaults spec.replicas to 1
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < wanted:
        return RolloutStatus(
            False, False, f"{waiting}{updated} out of {wanted} new replicas have been updated..."
        )
    if replicas > updated:
        return RolloutStatus(
            False, False, f"{waiting}{replicas - updated} old replicas are pending termination..."
        )
    if available < updated:
        return RolloutStatus(
            False, False, f"{waiting}{available} of {updated} updated replicas are available..."
        )
    return RolloutStatus(True, False, f'deployment "{name}" successfully rolled out')
