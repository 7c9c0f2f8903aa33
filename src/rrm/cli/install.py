"""`rrm runtime manifest NAME`: everything a cluster needs to run the agent of one Kubernetes runtime.

Namespace, ServiceAccount, least-privilege RBAC (a Role and RoleBinding per target namespace: Dapr
Components and Secrets there; Deployments, StatefulSets, pods and Dapr Configurations only when restarts
are enabled), a Secret with the control-plane URL and a fresh pairing token, a small volume for the agent's
key and cache (the pairing token is single-use: an agent that lost its key cannot pair again), and the
Deployment with probes and resource requests. `deploy/agent/` and the Helm chart hold the same objects.
"""

from __future__ import annotations

from typing import Any

import typer
import yaml

import rrm
from rrm.cli.arguments import parse_duration
from rrm.cli.common import EXIT_USAGE, admin_api, fail
from rrm.core.names import dns1123_label_error

KUBERNETES_KINDS = ("kubernetes", "kyma-managed", "kyma-standalone")
DEFAULT_IMAGE = f"rrm:{rrm.__version__}"
STATE_DIR = "/var/lib/rrm-agent"
HEALTH_PORT = 8081
USER_ID = 10001

RESOURCE_VERBS = ("get", "list", "watch", "create", "patch", "delete")


def agent_manifests(
    runtime: str,
    director_url: str,
    pairing_token: str,
    *,
    namespace: str = "rrm-system",
    target_namespaces: list[str] | None = None,
    image: str = DEFAULT_IMAGE,
    restarts: bool = True,
) -> list[dict[str, Any]]:
    """The objects, in the order `kubectl apply` should create them."""
    targets = list(dict.fromkeys(target_namespaces or ["default"]))
    name = f"rrm-agent-{runtime}"
    labels = {
        "app.kubernetes.io/name": "rrm-agent",
        "app.kubernetes.io/instance": runtime,
        "app.kubernetes.io/part-of": "rrm",
    }

    def meta(object_name: str, object_namespace: str) -> dict[str, Any]:
        return {"name": object_name, "namespace": object_namespace, "labels": dict(labels)}

    rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": list(RESOURCE_VERBS)},
        {"apiGroups": ["dapr.io"], "resources": ["components"], "verbs": list(RESOURCE_VERBS)},
    ]
    if restarts:
        rules += [
            {"apiGroups": ["dapr.io"], "resources": ["configurations"], "verbs": ["get"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["list", "patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        ]
    rbac: list[dict[str, Any]] = []
    for target in targets:
        rbac.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta(name, target),
                "rules": rules,
            }
        )
        rbac.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta(name, target),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            }
        )

    args = ["agent", "--director", "$(RRM_DIRECTOR_URL)", "--state-dir", STATE_DIR, "--target", "kubernetes"]
    for target in targets:
        args += ["--namespace", target]
    args += ["--hot-reload", "auto" if restarts else "on", "--health-port", str(HEALTH_PORT)]
    hardened = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, namespace),
        "spec": {
            "replicas": 1,
            # One agent per runtime at a time, and the volume is ReadWriteOnce.
            "strategy": {"type": "Recreate"},
            "selector": {
                "matchLabels": {
                    k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")
                }
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": USER_ID,
                        "runAsGroup": USER_ID,
                        "fsGroup": USER_ID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "agent",
                            "image": image,
                            "args": args,
                            "envFrom": [{"secretRef": {"name": name}}],
                            "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
                            "livenessProbe": {
                                "httpGet": {"path": "/livez", "port": "health"},
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "health"},
                                "periodSeconds": 5,
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "96Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "securityContext": hardened,
                            "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}],
                        }
                    ],
                    "volumes": [{"name": "state", "persistentVolumeClaim": {"claimName": f"{name}-state"}}],
                },
            },
        },
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",  # shared by the agents of several runtimes: no instance label
            "metadata": {"name": namespace, "labels": {"app.kubernetes.io/part-of": "rrm"}},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, namespace)},
        *rbac,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(name, namespace),
            "type": "Opaque",
            "stringData": {"RRM_DIRECTOR_URL": director_url, "RRM_PAIRING_TOKEN": pairing_token},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": meta(f"{name}-state", namespace),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
        },
        deployment,
    ]


class _PlainDumper(yaml.SafeDumper):
    """Writes shared values out every time: no `&id001` anchors for people to puzzle over."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_documents(objects: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.dump(o, Dumper=_PlainDumper, sort_keys=False) for o in objects)


def render_yaml(objects: list[dict[str, Any]], header: str) -> str:
    return f"# {header}\n---\n" + dump_documents(objects)


def runtime_manifest(
    ctx: typer.Context,
    name: str,
    namespace: str = typer.Option("rrm-system", "--namespace", help="where the agent runs"),
    target_namespace: list[str] = typer.Option(
        [], "--target-namespace", help="namespace the agent writes to, repeatable; the first is its default"
    ),
    image: str = typer.Option(DEFAULT_IMAGE, "--image", help="the agent image (built from this repository)"),
    restarts: bool = typer.Option(
        True,
        "--restarts/--no-restarts",
        help="let the agent restart workloads whose sidecars do not hot reload",
    ),
    director: str = typer.Option(None, "--director", help="control-plane URL as the cluster reaches it"),
    ttl: str = typer.Option("1h", "--ttl", help="pairing token lifetime"),
) -> None:
    """Print the manifests that install the agent of runtime NAME in a cluster, with a fresh pairing token."""
    for value in [namespace, *target_namespace]:
        problem = dns1123_label_error(value)
        if problem:
            fail(f"namespace {value!r}: {problem}", EXIT_USAGE)
    ttl_seconds = parse_duration(ttl)
    with admin_api(ctx) as api:
        runtime = api.get_runtime(name)
        if runtime.get("kind") not in KUBERNETES_KINDS:
            fail(
                f"runtime {name} is of kind {runtime.get('kind')}; "
                f"manifests are for {', '.join(KUBERNETES_KINDS)}"
            )
        pairing = api.new_pairing_token(name, ttl_seconds)
        objects = agent_manifests(
            name,
            director or api.url,
            pairing["pairing_token"],
            namespace=namespace,
            target_namespaces=target_namespace,
            image=image,
            restarts=restarts,
        )
    header = (
        f"rrm agent for runtime {name}; pairing token expires at {pairing['expires_at']}. kubectl apply -f -"
    )
    typer.echo(render_yaml(objects, header), nl=False)
