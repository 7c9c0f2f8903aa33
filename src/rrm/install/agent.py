"""The objects that run the agent of one Kubernetes runtime.

Namespace, ServiceAccount, least-privilege RBAC (a Role and RoleBinding per target namespace: Dapr
Components and Secrets there; listing Deployments and pods, to follow rollouts and ask the sidecars (on
their pod IPs) what they loaded; patching Deployments and StatefulSets and reading Dapr Configurations only
when restarts are enabled), a Secret with the control-plane URL and a pairing token, a small volume for
the agent's key and cache (the pairing token is single-use: an agent that lost its key cannot pair again),
and the Deployment with probes and resource requests.

Each object has its own builder so that `rrm.install.generate` can write the Helm chart from the same
builders, putting Helm's loop over target namespaces and its `restarts` switch around them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from rrm.install.pods import DEFAULT_IMAGE, container_security_context, http_probe, pod_security_context

STATE_DIR = "/var/lib/rrm-agent"
HEALTH_PORT = 8081
RESOURCE_VERBS = ("get", "list", "watch", "create", "patch", "delete")
# Secrets and Components in a target namespace: what the agent always writes; the Deployments and pods
# whose rollouts and sidecars it follows until they loaded what it wrote.
BASE_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["secrets"], "verbs": list(RESOURCE_VERBS)},
    {"apiGroups": ["dapr.io"], "resources": ["components"], "verbs": list(RESOURCE_VERBS)},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
)
# What restarting workloads whose sidecars do not hot reload needs on top.
RESTART_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": ["dapr.io"], "resources": ["configurations"], "verbs": ["get"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["list", "patch"]},
)
ARGS_HEAD = ("agent", "--director", "$(RRM_DIRECTOR_URL)", "--state-dir", STATE_DIR, "--target", "kubernetes")
ARGS_TAIL = ("--health-port", str(HEALTH_PORT))


@dataclass(frozen=True)
class AgentInstallValues:
    """What differs between two installations of the agent."""

    runtime: str
    director_url: str
    pairing_token: str
    namespace: str = "rrm-system"
    # The namespaces the agent writes to; the first is its default.
    target_namespaces: tuple[str, ...] = ("default",)
    image: str = DEFAULT_IMAGE
    # Restart Dapr-enabled workloads whose sidecars do not hot reload (and grant the RBAC for it).
    restarts: bool = True

    @property
    def name(self) -> str:
        return f"rrm-agent-{self.runtime}"

    @property
    def labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "rrm-agent",
            "app.kubernetes.io/instance": self.runtime,
            "app.kubernetes.io/part-of": "rrm",
        }

    def metadata(self, name: str, namespace: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": self.labels}


def agent_objects(values: AgentInstallValues) -> list[dict[str, Any]]:
    """The objects, in the order `kubectl apply` should create them."""
    targets = list(dict.fromkeys(values.target_namespaces or ("default",)))
    rules = [*BASE_RULES, *(RESTART_RULES if values.restarts else ())]
    rbac = [obj for target in targets for obj in (role(values, target, rules), role_binding(values, target))]
    args = [
        *ARGS_HEAD,
        *(arg for target in targets for arg in namespace_args(target)),
        "--hot-reload",
        hot_reload_mode(values.restarts),
        *ARGS_TAIL,
    ]
    return [
        namespace(values),
        service_account(values),
        *rbac,
        secret(values),
        state_claim(values),
        deployment(values, args),
    ]


def namespace_args(target: str) -> list[str]:
    return ["--namespace", target]


def hot_reload_mode(restarts: bool) -> str:
    return "auto" if restarts else "on"


def namespace(values: AgentInstallValues) -> dict[str, Any]:
    """Where the agent runs."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",  # shared by the agents of several runtimes: no instance label
        "metadata": {"name": values.namespace, "labels": {"app.kubernetes.io/part-of": "rrm"}},
    }


def service_account(values: AgentInstallValues) -> dict[str, Any]:
    """The agent's identity towards the API server."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": values.metadata(values.name, values.namespace),
    }


def role(values: AgentInstallValues, target: str, rules: list[Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": values.metadata(values.name, target),
        "rules": copy.deepcopy(rules),
    }


def role_binding(values: AgentInstallValues, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": values.metadata(values.name, target),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": values.name},
        "subjects": [{"kind": "ServiceAccount", "name": values.name, "namespace": values.namespace}],
    }


def secret(values: AgentInstallValues) -> dict[str, Any]:
    """The control-plane URL as the cluster reaches it and a single-use pairing token. After the first
    pairing the agent needs the token no more."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": values.metadata(values.name, values.namespace),
        "type": "Opaque",
        "stringData": {"RRM_DIRECTOR_URL": values.director_url, "RRM_PAIRING_TOKEN": values.pairing_token},
    }


def state_claim(values: AgentInstallValues) -> dict[str, Any]:
    """The agent's key and cached desired state survive restarts, so the agent never needs a second token."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": values.metadata(f"{values.name}-state", values.namespace),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    }


def deployment(values: AgentInstallValues, args: list[Any]) -> dict[str, Any]:
    """The agent. One replica (Recreate): one agent per runtime at a time, and the volume is ReadWriteOnce."""
    selected = ("app.kubernetes.io/name", "app.kubernetes.io/instance")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": values.metadata(values.name, values.namespace),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {k: v for k, v in values.labels.items() if k in selected}},
            "template": {
                "metadata": {"labels": values.labels},
                "spec": {
                    "serviceAccountName": values.name,
                    "securityContext": pod_security_context(),
                    "containers": [agent_container(values, args)],
                    "volumes": [
                        {"name": "state", "persistentVolumeClaim": {"claimName": f"{values.name}-state"}}
                    ],
                },
            },
        },
    }


def agent_container(values: AgentInstallValues, args: list[Any]) -> dict[str, Any]:
    return {
        "name": "agent",
        "image": values.image,
        "args": args,
        "envFrom": [{"secretRef": {"name": values.name}}],
        "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
        "livenessProbe": http_probe("/livez", "health", 10, failure_threshold=3),
        "readinessProbe": http_probe("/readyz", "health", 5),
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}],
    }
