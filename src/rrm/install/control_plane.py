"""The objects that run the control plane on Kubernetes: N stateless replicas on one PostgreSQL database.

A Deployment whose init container migrates the schema before a replica serves, probes, resources and a
PodDisruptionBudget, a Service, the Secret the replicas read their database URL and keys from, a
ServiceAccount without API access, and optionally an Ingress. Each object has its own builder so that
`rrm.install.generate` can write the Helm chart from the same builders.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from rrm.install.pods import DEFAULT_IMAGE, container_security_context, http_probe, pod_security_context

NAME = "rrm-control-plane"
DATA_DIR = "/var/lib/rrm"
PORT = 8080
PART_OF = {"app.kubernetes.io/part-of": "rrm"}
SELECTOR = {"app.kubernetes.io/name": NAME}


def _default_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def _default_annotations() -> dict[str, str]:
    # Agents hold long-polls for --wait (30 s by default): the proxy's read timeout must be longer.
    return {"nginx.ingress.kubernetes.io/proxy-read-timeout": "120"}


@dataclass(frozen=True)
class IngressValues:
    host: str
    # Empty: the cluster's default IngressClass.
    class_name: str = ""
    # The TLS Secret for the host; empty: plain HTTP.
    tls_secret_name: str = "rrm-control-plane-tls"
    annotations: dict[str, str] = field(default_factory=_default_annotations)


@dataclass(frozen=True)
class ControlPlaneInstallValues:
    """What differs between two installations of the control plane."""

    namespace: str = "rrm-system"
    image: str = DEFAULT_IMAGE
    replicas: int = 3
    # Of each `rrm server` container.
    resources: dict[str, Any] = field(default_factory=_default_resources)
    # A Secret of yours with the three values below; empty: one is made of them.
    existing_secret: str = ""
    database_url: str = ""
    secret_key: str = ""
    bootstrap_admin_token: str = ""
    # The PodDisruptionBudget: minAvailable when set, else maxUnavailable.
    min_available: int | str | None = None
    max_unavailable: int | str = 1
    ingress: IngressValues | None = None

    @property
    def secret_name(self) -> str:
        return self.existing_secret or NAME

    def metadata(self, **labels: str) -> dict[str, Any]:
        return {"name": NAME, "namespace": self.namespace, "labels": {**labels, **PART_OF}}


def control_plane_objects(values: ControlPlaneInstallValues) -> list[dict[str, Any]]:
    """The objects, in the order `kubectl apply` should create them."""
    objects = [namespace(values), service_account(values)]
    if not values.existing_secret:
        objects.append(secret(values))
    objects += [deployment(values), service(values), disruption_budget(values)]
    if values.ingress is not None:
        objects.append(ingress(values, values.ingress))
    return objects


def namespace(values: ControlPlaneInstallValues) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": values.namespace, "labels": PART_OF},
    }


def service_account(values: ControlPlaneInstallValues) -> dict[str, Any]:
    """The control plane talks to its database and its agents only; it needs no Kubernetes API access."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": values.metadata(),
        "automountServiceAccountToken": False,
    }


def secret(values: ControlPlaneInstallValues) -> dict[str, Any]:
    """Every replica must have the same RRM_SECRET_KEY, and losing it loses every stored secret value."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": values.metadata(),
        "type": "Opaque",
        "stringData": {
            "RRM_DATABASE_URL": values.database_url,
            "RRM_SECRET_KEY": values.secret_key,
            "RRM_BOOTSTRAP_ADMIN_TOKEN": values.bootstrap_admin_token,
        },
    }


def service(values: ControlPlaneInstallValues) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": values.metadata(),
        "spec": {"selector": SELECTOR, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def disruption_budget(values: ControlPlaneInstallValues) -> dict[str, Any]:
    """A voluntary disruption (a node drain) leaves replicas serving."""
    budget: dict[str, Any] = (
        {"minAvailable": values.min_available}
        if values.min_available is not None
        else {"maxUnavailable": values.max_unavailable}
    )
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": values.metadata(),
        "spec": {**budget, "selector": {"matchLabels": SELECTOR}},
    }


def ingress(values: ControlPlaneInstallValues, ingress: IngressValues) -> dict[str, Any]:
    """Long-polls need a read timeout above the agents' --wait, hence the annotation for ingress-nginx."""
    metadata = values.metadata()
    if ingress.annotations:
        metadata["annotations"] = copy.deepcopy(ingress.annotations)
    spec: dict[str, Any] = {}
    if ingress.class_name:
        spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    backend = {"service": {"name": NAME, "port": {"name": "http"}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    spec["rules"] = [{"host": ingress.host, "http": {"paths": [path]}}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}


def deployment(values: ControlPlaneInstallValues) -> dict[str, Any]:
    """A rollout never takes a serving replica away before its successor is ready; replicas spread over
    nodes."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": values.metadata(**SELECTOR),
        "spec": {
            "replicas": values.replicas,
            "selector": {"matchLabels": SELECTOR},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": SELECTOR},
                "spec": {
                    "serviceAccountName": NAME,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": pod_security_context(),
                    "initContainers": [migrate_container(values)],
                    "containers": [server_container(values)],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": SELECTOR},
                        }
                    ],
                },
            },
        },
    }


def migrate_container(values: ControlPlaneInstallValues) -> dict[str, Any]:
    """Every pod runs it; an advisory lock makes replicas take turns and all but the first find nothing to
    do, so the schema moves once per rollout, before any new replica serves. It needs a writable data dir:
    the default one is under $HOME, which the read-only image does not have."""
    return {
        "name": "migrate",
        "image": values.image,
        "args": ["migrate", "--data-dir", DATA_DIR],
        "envFrom": [{"secretRef": {"name": values.secret_name}}],
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }


def server_container(values: ControlPlaneInstallValues) -> dict[str, Any]:
    return {
        "name": "rrm",
        "image": values.image,
        "args": ["server", "--host", "0.0.0.0", "--port", str(PORT), "--data-dir", DATA_DIR],
        "envFrom": [{"secretRef": {"name": values.secret_name}}],
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": http_probe("/readyz", "http", 5, failure_threshold=2),
        "livenessProbe": http_probe("/healthz", "http", 10, failure_threshold=3),
        "startupProbe": http_probe("/healthz", "http", 2, failure_threshold=30),
        # Leave the Service's endpoints before the process stops; held long-polls are then answered at once
        # and the agents reconnect to another replica. `exec` rather than the `sleep` action, which
        # Kubernetes 1.29 has only behind an alpha feature gate (it drops the field, then rejects the
        # empty hook).
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "resources": copy.deepcopy(values.resources),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }
