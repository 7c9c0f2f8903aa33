"""The `gardener` backend: a `core.gardener.cloud/v1beta1` Shoot in the configured project namespace, built
with the account the Hyperscaler Account Pool claimed, followed through `status.lastOperation`, reached with
a kubeconfig from the `adminkubeconfig` subresource, and deleted with Gardener's deletion confirmation.

The Shoot's name comes from the environment's id (`c-` and a digest), so a stage resumed after a crash finds
the Shoot it created and never creates a second; one of that name made for another environment is refused.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from rrm.server.provisioning.backends.base import (
    AgentInstall,
    BackendFailure,
    ClusterProgress,
    ClusterRequest,
    RetryLater,
)
from rrm.server.provisioning.backends.kubernetes import KubernetesBackend
from rrm.server.provisioning.garden import SHOOTS, Conflict, Garden, GardenError, classify
from rrm.server.provisioning.hap import Binding, account_parts
from rrm.server.provisioning.hap_cleanup import CleanupJob

PROJECT_NAME_LIMIT = 21  # Gardener: len(project + shoot name) <= 21
CONFIRM_DELETION = "confirmation.gardener.cloud/deletion"
EU_ACCESS_ANNOTATION = "support.gardener.cloud/eu-access-for-cluster-nodes"
KUBERNETES_VERSION = "1.32"
KUBECONFIG_SECONDS = 24 * 3600
NETWORKING_TYPE = "calico"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENVIRONMENT, ENVIRONMENT_ID, OPERATION = "rrm.io/environment", "rrm.io/environment-id", "rrm.io/operation"


def shoot_name(environment_id: str, project: str) -> str:
    """`c-` and up to 8 hex digits of the environment id's digest, within Gardener's length limit."""
    room = min(8, PROJECT_NAME_LIMIT - len(project) - 2)
    if room < 5:
        raise ValueError(
            f"the Gardener project {project!r} is too long: project and Shoot names share "
            f"{PROJECT_NAME_LIMIT} characters and rrm needs 7 of them"
        )
    return "c-" + hashlib.sha256(environment_id.encode()).hexdigest()[:room]


def shoot_manifest(garden: Garden, request: ClusterRequest, binding: Binding) -> dict[str, Any]:
    p = request.parameters
    tenant = {"rrm.io/global-account": request.global_account, "rrm.io/subaccount": request.subaccount}
    annotations = {
        ENVIRONMENT: request.environment,
        ENVIRONMENT_ID: request.environment_id,
        OPERATION: request.operation_id,
        **{k: v for k, v in tenant.items() if v and not LABEL_VALUE.match(v)},
    }
    if p.get("name"):
        annotations["rrm.io/display-name"] = str(p["name"])
    if p.get("administrators"):
        annotations["rrm.io/administrators"] = ",".join(p["administrators"])
    if binding.eu_access:
        annotations[EU_ACCESS_ANNOTATION] = "true"
    networking = p.get("networking") or {}
    binding_field = (
        "credentialsBindingName" if binding.kind.kind == "CredentialsBinding" else "secretBindingName"
    )
    return {
        "apiVersion": f"{SHOOTS.group}/{SHOOTS.version}",
        "kind": SHOOTS.kind,
        "metadata": {
            "name": shoot_name(request.environment_id, garden.project),
            "namespace": garden.namespace,
            "labels": {k: v for k, v in tenant.items() if v and LABEL_VALUE.match(v) and len(v) <= 63},
            "annotations": annotations,
        },
        "spec": {
            "cloudProfile": {"kind": "CloudProfile", "name": p["provider"]},
            "kubernetes": {"version": KUBERNETES_VERSION},
            "region": request.region,
            "purpose": "evaluation" if request.plan == "trial" else "production",
            "provider": {"type": p["provider"], "workers": [worker(p)]},
            "networking": {
                "type": NETWORKING_TYPE,
                **{k: networking[k] for k in ("nodes", "pods", "services") if k in networking},
            },
            binding_field: binding.name,
            "maintenance": {"autoUpdate": {"kubernetesVersion": True, "machineImageVersion": True}},
        },
    }


def worker(parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "cpu-worker-0",
        "machine": {"type": parameters["machineType"]},
        "minimum": int(parameters["autoScalerMin"]),
        "maximum": int(parameters["autoScalerMax"]),
        "maxSurge": 1,
        "maxUnavailable": 0,
    }


class GardenerBackend:
    name = "gardener"
    creates_clusters = True
    mints_kubeconfigs = True

    def __init__(self, garden: Garden, cleanup: CleanupJob | None = None) -> None:
        self.garden = garden
        self.cleanup = cleanup
        self.agents = KubernetesBackend()

    def shoot(self, request: ClusterRequest) -> tuple[str, dict[str, Any] | None]:
        """The Shoot's name and the Shoot (None when there is none); one of another environment is refused."""
        name = shoot_name(request.environment_id, self.garden.project)
        shoot = self._do(f"reading Shoot {name}", lambda: self.garden.get(SHOOTS, name))
        if shoot is not None:
            owner = (shoot["metadata"].get("annotations") or {}).get(ENVIRONMENT_ID)
            if owner != request.environment_id:
                raise BackendFailure(
                    f"a Shoot named {name} exists in {self.garden.namespace} for another environment"
                )
        return name, shoot

    def create_cluster(self, request: ClusterRequest) -> None:
        name, shoot = self.shoot(request)
        if shoot is not None:
            return  # created by an earlier attempt
        binding = self._binding(request)
        manifest = shoot_manifest(self.garden, request, binding)
        try:
            self.garden.create(SHOOTS, manifest)
        except GardenError as exc:
            if exc.status == 409:  # created meanwhile: check it is ours
                self.shoot(request)
                return
            raise classify(exc, f"creating Shoot {name}") from exc

    def _binding(self, request: ClusterRequest) -> Binding:
        if not request.account:
            raise BackendFailure(
                f"plan {request.plan} claimed no account; gardener plans need accountPool: gardener"
            )
        kind, binding_name = account_parts(request.account)
        body = self._do(f"reading {request.account}", lambda: self.garden.get(kind, binding_name))
        if body is None:
            raise BackendFailure(f"the account {request.account} does not exist in {self.garden.namespace}")
        binding = Binding(kind, body)
        if request.environment not in binding.users:
            raise BackendFailure(
                f"the account {request.account} is not claimed by environment {request.environment} "
                "(released?)"
            )
        if binding.dirty:
            raise BackendFailure(
                f"the account {request.account} is marked dirty: it is never used for a new cluster"
            )
        return binding

    def cluster_progress(self, request: ClusterRequest) -> ClusterProgress:
        name, shoot = self.shoot(request)
        if shoot is None:
            raise BackendFailure(f"the Shoot {name} is gone (deleted outside rrm?)")
        if shoot["metadata"].get("deletionTimestamp"):
            return ClusterProgress(
                False, f"Shoot {name} is being deleted", failed=f"the Shoot {name} is being deleted"
            )
        status = shoot.get("status") or {}
        last = status.get("lastOperation") or {}
        state, percent = last.get("state"), last.get("progress")
        said = f"Shoot {name}: {last.get('description') or 'waiting for Gardener to schedule it'}"
        if state == "Succeeded" and status.get("observedGeneration") == shoot["metadata"].get("generation"):
            return ClusterProgress(True, f"Shoot {name} is ready", 100)
        if state == "Failed":
            return ClusterProgress(
                False, said, percent, failed=f"Gardener could not create the cluster: {said}{codes(status)}"
            )
        if state == "Error":
            return ClusterProgress(False, f"{said}{codes(status)} (Gardener retries)", percent)
        return ClusterProgress(False, said, percent)

    def kubeconfig(self, request: ClusterRequest) -> str:
        name = shoot_name(request.environment_id, self.garden.project)
        try:
            return self.garden.admin_kubeconfig(name, KUBECONFIG_SECONDS)
        except GardenError as exc:
            if exc.status == 422:  # no advertised address yet
                raise RetryLater(f"Shoot {name} has no kubeconfig yet: {exc}") from exc
            raise classify(exc, f"getting a kubeconfig for Shoot {name}") from exc

    def install_agent(self, request: ClusterRequest, kubeconfig: str, install: AgentInstall) -> None:
        self.agents.install_agent(request, kubeconfig, install)

    def remove_agent(self, request: ClusterRequest, kubeconfig: str) -> None:
        """With a fresh kubeconfig (the stored one may have expired), while the cluster is up."""
        _, shoot = self.shoot(request)
        if shoot is None or shoot["metadata"].get("deletionTimestamp"):
            return
        if not (shoot.get("status") or {}).get("advertisedAddresses"):
            return  # never came up: nothing was installed
        self.agents.remove_agent(request, self.kubeconfig(request))

    def delete_cluster(self, request: ClusterRequest) -> None:
        """Confirm the deletion (Gardener refuses it otherwise), then delete."""
        name, shoot = self.shoot(request)
        if shoot is None:
            return
        annotations = shoot["metadata"].setdefault("annotations", {})
        if annotations.get(CONFIRM_DELETION) != "true":
            annotations[CONFIRM_DELETION] = "true"
            try:
                self._do(
                    f"confirming the deletion of Shoot {name}", lambda: self.garden.replace(SHOOTS, shoot)
                )
            except Conflict as exc:
                raise RetryLater(f"Shoot {name} changed while confirming its deletion") from exc
        self._do(f"deleting Shoot {name}", lambda: self.garden.delete(SHOOTS, name))

    def deletion_progress(self, request: ClusterRequest) -> ClusterProgress:
        name, shoot = self.shoot(request)
        if shoot is None:
            return ClusterProgress(True, f"Shoot {name} is gone")
        if not shoot["metadata"].get("deletionTimestamp"):
            self.delete_cluster(request)
            return ClusterProgress(False, f"Shoot {name}: deletion requested again")
        status = shoot.get("status") or {}
        last = status.get("lastOperation") or {}
        said = f"Shoot {name}: {last.get('description') or 'deletion requested'}"
        if last.get("type") == "Delete" and last.get("state") in ("Failed", "Error"):
            return ClusterProgress(False, f"{said}{codes(status)} (Gardener retries)", last.get("progress"))
        return ClusterProgress(False, said, last.get("progress") if last.get("type") == "Delete" else None)

    def update_cluster(self, request: ClusterRequest) -> None:
        """The updatable parameters (machine type, autoscaler bounds, administrators) onto the Shoot."""
        name, shoot = self.shoot(request)
        if shoot is None:
            raise BackendFailure(f"the Shoot {name} is gone (deleted outside rrm?)")
        workers = shoot["spec"]["provider"].get("workers") or [{}]
        workers[0] = {**workers[0], **worker(request.parameters)}
        shoot["spec"]["provider"]["workers"] = workers
        annotations = shoot["metadata"].setdefault("annotations", {})
        annotations["rrm.io/administrators"] = ",".join(request.parameters.get("administrators") or [])
        try:
            self._do(f"updating Shoot {name}", lambda: self.garden.replace(SHOOTS, shoot))
        except Conflict as exc:
            raise RetryLater(f"Shoot {name} changed while updating it") from exc

    def supervise(self) -> None:
        """On the leader, every few seconds: the account pool's cleanup, when due."""
        if self.cleanup is not None:
            self.cleanup.due()

    def _do(self, doing: str, work: Any) -> Any:
        try:
            return work()
        except GardenError as exc:
            raise classify(exc, doing) from exc


def codes(status: dict[str, Any]) -> str:
    found = sorted({c for error in status.get("lastErrors") or [] for c in error.get("codes") or []})
    return f" [{', '.join(found)}]" if found else ""
